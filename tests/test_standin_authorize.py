"""The stand-in's authorization code flow with PKCE (what Swagger UI's login does): the
authorize endpoint's checks, the login page, the code exchange and its refusals, CORS for
browser apps. In-process; the browser test drives the same flow in Chromium."""

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from fastapi_zitadel.testing import StandInProject, WebApplication, ZitadelStandIn

from .helpers import FakeClock

REDIRECT = "http://127.0.0.1:8000/docs/oauth2-redirect"
SCOPES = (
    "openid profile email urn:zitadel:iam:org:projects:roles items:read "
    "urn:zitadel:iam:org:project:id:{project}:aud"
)


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def project(clock: FakeClock) -> StandInProject:
    project = StandInProject(ZitadelStandIn(clock=clock))
    project.user("alice", roles=["admin"])
    project.user("bob", roles=["reader"])
    return project


@pytest.fixture
def web(project: StandInProject) -> WebApplication:
    return project.web_app([REDIRECT])


@pytest.fixture
async def http(project: StandInProject) -> AsyncIterator[httpx.AsyncClient]:
    transport = project.standin.transport()
    base = project.standin.issuer
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


def authorize_params(web: WebApplication, verifier: str, **changes: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": web.client_id,
        "redirect_uri": REDIRECT,
        "scope": SCOPES.format(project=web.project.id),
        "state": "xyz",
        "nonce": "n-1",
        "code_challenge": challenge_of(verifier),
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return {name: value for name, value in params.items() if value != ""}


async def log_in(
    http: httpx.AsyncClient, web: WebApplication, verifier: str, username: str = "alice"
) -> str:
    """Authorize, pick ``username`` on the login page, and return the code."""
    page = await http.get("/oauth/v2/authorize", params=authorize_params(web, verifier))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    request_id = page.text.split('name="auth_request" value="')[1].split('"')[0]
    user_id = page.text.split(f">{username} (")[0].rsplit('value="', 1)[1].split('"')[0]
    answer = await http.post("/ui/login/select", data={"auth_request": request_id, "user": user_id})
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


async def exchange(
    http: httpx.AsyncClient, web: WebApplication, code: str, verifier: str, **changes: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": web.client_id,
        "code_verifier": verifier,
        **changes,
    }
    return await http.post("/oauth/v2/token", data=form)


async def test_login_page_lists_users_with_their_roles(
    http: httpx.AsyncClient, web: WebApplication
) -> None:
    page = await http.get("/oauth/v2/authorize", params=authorize_params(web, "v" * 43))
    assert ">alice (admin)</button>" in page.text
    assert ">bob (reader)</button>" in page.text
    assert "Sign in to shop" in page.text


async def test_code_flow_gives_a_token_the_api_accepts(
    http: httpx.AsyncClient, web: WebApplication, project: StandInProject, clock: FakeClock
) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await log_in(http, web, verifier, "alice")
    answer = await exchange(http, web, code, verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    # ZITADEL knows no custom scopes (zitadel/zitadel#8967): items:read is dropped.
    assert "items:read" not in body["scope"].split()
    assert "urn:zitadel:iam:org:projects:roles" in body["scope"].split()

    async with project.introspection(http_client=http, clock=clock) as zitadel:
        principal = await zitadel.verify(body["access_token"])
    assert principal.username == "alice"
    assert principal.has_role("admin")
    assert principal.client_id == web.client_id
    assert project.project.id in principal.audience
    assert not principal.has_scope("items:read")

    keys = (await http.get("/oauth/v2/keys")).json()["keys"]
    header = jwt.get_unverified_header(body["id_token"])
    key = next(k for k in keys if k["kid"] == header["kid"])
    claims = jwt.decode(
        body["id_token"],
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=web.client_id,
        issuer=project.standin.issuer,
        options={"verify_exp": False, "verify_iat": False},  # the stand-in's clock is fake
    )
    assert claims["sub"] == project.user("alice").id
    assert claims["nonce"] == "n-1"


async def test_code_is_single_use_and_bound_to_verifier_client_and_redirect(
    http: httpx.AsyncClient, web: WebApplication, project: StandInProject
) -> None:
    verifier = secrets.token_urlsafe(48)
    other = project.web_app([REDIRECT], name="other-web")

    code = await log_in(http, web, verifier)
    wrong = await exchange(http, web, code, secrets.token_urlsafe(48))
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
    again = await exchange(http, web, code, verifier)  # a refused code is spent as well
    assert again.json()["error"] == "invalid_grant"

    code = await log_in(http, web, verifier)
    assert (await exchange(http, other, code, verifier)).json()["error"] == "invalid_client"

    code = await log_in(http, web, verifier)
    moved = await exchange(http, web, code, verifier, redirect_uri=REDIRECT + "x")
    assert moved.json()["error"] == "invalid_grant"

    code = await log_in(http, web, verifier)
    assert (await exchange(http, web, code, verifier)).status_code == 200
    assert (await exchange(http, web, code, verifier)).json()["error"] == "invalid_grant"

    short = "a" * 42  # RFC 7636: at least 43 characters
    code = await log_in(http, web, short)
    assert (await exchange(http, web, code, short)).json()["error"] == "invalid_grant"


async def test_expired_code(http: httpx.AsyncClient, web: WebApplication, clock: FakeClock) -> None:
    verifier = secrets.token_urlsafe(48)
    code = await log_in(http, web, verifier)
    clock.advance(301)
    assert (await exchange(http, web, code, verifier)).json()["error"] == "invalid_grant"


async def test_authorize_refuses_without_redirecting_to_unknown_places(
    http: httpx.AsyncClient, web: WebApplication
) -> None:
    verifier = secrets.token_urlsafe(48)
    for changes in ({"client_id": "nobody"}, {"redirect_uri": "http://evil.test/cb"}):
        page = await http.get(
            "/oauth/v2/authorize", params=authorize_params(web, verifier, **changes)
        )
        assert page.status_code == 400
        assert "location" not in page.headers
        assert "Cannot sign in" in page.text


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"code_challenge": ""}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": ""}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
async def test_authorize_errors_go_back_to_the_app(
    http: httpx.AsyncClient, web: WebApplication, changes: dict[str, str], error: str
) -> None:
    answer = await http.get(
        "/oauth/v2/authorize", params=authorize_params(web, "v" * 43, **changes)
    )
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == [error]
    assert query["state"] == ["xyz"]


async def test_login_answer_only_once_and_for_known_users(
    http: httpx.AsyncClient, web: WebApplication
) -> None:
    page = await http.get("/oauth/v2/authorize", params=authorize_params(web, "v" * 43))
    request_id = page.text.split('name="auth_request" value="')[1].split('"')[0]
    unknown = await http.post("/ui/login/select", data={"auth_request": "x", "user": "1"})
    assert unknown.status_code == 400
    nobody = await http.post("/ui/login/select", data={"auth_request": request_id, "user": "1"})
    assert nobody.status_code == 400


async def test_login_page_escapes_names(
    http: httpx.AsyncClient, web: WebApplication, project: StandInProject
) -> None:
    project.user("<script>x</script>")
    page = await http.get("/oauth/v2/authorize", params=authorize_params(web, "v" * 43))
    assert "<script>x" not in page.text
    assert "&lt;script&gt;x" in page.text


async def test_token_endpoint_allows_browser_apps(http: httpx.AsyncClient) -> None:
    origin = "http://127.0.0.1:8000"
    preflight = await http.options(
        "/oauth/v2/token",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-requested-with",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", origin)
    answer = await http.post(
        "/oauth/v2/token", data={"grant_type": "authorization_code"}, headers={"Origin": origin}
    )
    assert answer.headers["access-control-allow-origin"] in ("*", origin)


async def test_discovery_announces_the_code_flow(http: httpx.AsyncClient) -> None:
    discovery = (await http.get("/.well-known/openid-configuration")).json()
    assert "authorization_code" in discovery["grant_types_supported"]
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert discovery["authorization_endpoint"].endswith("/oauth/v2/authorize")
