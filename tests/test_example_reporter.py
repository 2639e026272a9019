"""The example's second service: the reporter calls the shop API as a service user, both served
on loopback against the stand-in over real HTTP (discovery, the token endpoint, introspection
and the two APIs each on their own port)."""

from collections.abc import Iterator

import httpx
import pytest

from example_app.app import create_app
from example_app.reporter import auth_from_env, create_reporter
from fastapi_zitadel import ServiceAccountAuth
from fastapi_zitadel.defaults import set_default_zitadel
from fastapi_zitadel.testing import LoopbackServer, StandInProject


@pytest.fixture
def shop(zitadel_project: StandInProject) -> Iterator[str]:
    app = create_app(zitadel_project.introspection(cache_ttl=0), org_id=zitadel_project.org.id)
    with LoopbackServer(app) as url:
        yield url
    set_default_zitadel(None)


def serve_reporter(shop: str, auth: ServiceAccountAuth) -> LoopbackServer:
    return LoopbackServer(create_reporter(shop, auth))


@pytest.mark.parametrize(("role", "stats"), [("reader", "HTTP 403"), ("admin", {"items": 2})])
def test_reporter_calls_the_shop_as_a_service_user(
    zitadel_project: StandInProject, shop: str, role: str, stats: object
) -> None:
    robot = zitadel_project.service_user("reporter", roles=[role])
    auth = ServiceAccountAuth(
        zitadel_project.standin.issuer,
        key_file=zitadel_project.service_key_path("reporter"),
        project_id=zitadel_project.project.id,
    )
    before = zitadel_project.standin.token_calls
    with serve_reporter(shop, auth) as reporter:
        for _ in range(3):
            report = httpx.get(reporter + "/report", timeout=30)
            assert report.status_code == 200, report.text
            assert report.json() == {
                "as": None,  # a service user's token has no profile scope: no user name
                "items": ["apple", "pear"],
                "stats": stats,
            }
        # One token for every call of every report.
        assert zitadel_project.standin.token_calls == before + 1
        # The shop revokes nothing by itself; a revoked token is replaced on the next call.
        zitadel_project.standin.revoke(
            next(
                value
                for value, token in zitadel_project.standin.directory.tokens.items()
                if token.user is robot
            )
        )
        assert httpx.get(reporter + "/report", timeout=30).status_code == 200
        assert zitadel_project.standin.token_calls == before + 2


def test_reporter_from_the_environment_with_a_secret(
    zitadel_project: StandInProject, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    robot = zitadel_project.service_user("reporter", roles=["reader"], with_secret=True)
    assert robot.client_secret is not None
    monkeypatch.setenv("ZITADEL_ISSUER", zitadel_project.standin.issuer)
    monkeypatch.setenv("ZITADEL_PROJECT_ID", zitadel_project.project.id)
    monkeypatch.setenv("REPORTER_CLIENT_ID", robot.username)
    monkeypatch.setenv("REPORTER_CLIENT_SECRET", robot.client_secret)
    with serve_reporter(shop, auth_from_env()) as reporter:
        assert httpx.get(reporter + "/report", timeout=30).json()["items"] == ["apple", "pear"]
    monkeypatch.delenv("REPORTER_CLIENT_ID")
    monkeypatch.setenv("REPORTER_KEY_FILE", str(zitadel_project.service_key_path("reporter")))
    with serve_reporter(shop, auth_from_env()) as reporter:
        assert httpx.get(reporter + "/report", timeout=30).json()["stats"] == "HTTP 403"
