"""Nothing secret in any log record (every logger, at DEBUG) or exception message: not the
bearer tokens, not the client assertions, not the private keys, not the client secrets."""

import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
from starlette.testclient import TestClient

from fastapi_zitadel import Principal, ZitadelError, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, StandInProject
from fastapi_zitadel.testing._directory import generate_rsa_key, pkcs1_pem

# The stand-in faults this test injects (a subset of ZitadelStandIn.inject's kinds).
Injected = Literal["status", "garbage", "drop", "latency", "rate_limit"]


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))
        self.texts.append(repr(record.args))


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler = Everything()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


def fragments(secret: str) -> list[str]:
    """Pieces of a secret long enough to be recognisable in any text."""
    pieces = [secret]
    for part in secret.replace("\n", ".").split("."):
        if len(part) >= 16:
            pieces.append(part[:16])
            pieces.append(part[-16:])
    return pieces


def pem_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def app_for(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel.require_scope("openid"))]) -> Any:
        return principal.subject

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, principal: Annotated[Principal, Depends(zitadel)]) -> None:
        await websocket.accept()
        await websocket.close()

    return app


def test_no_secret_reaches_logs_or_exceptions(
    zitadel_project: StandInProject, captured: Everything
) -> None:
    standin = zitadel_project.standin
    tokens: list[str] = []
    errors: list[str] = []

    def token(**options: Any) -> str:
        tokens.append(zitadel_project.token(**options))
        return tokens[-1]

    zitadel = zitadel_project.introspection(
        timeout=0.5, max_retries=1, websocket_query_token=True, circuit_breaker_threshold=0
    )
    basic = standin.add_api_app(zitadel_project.project, "basic", auth="basic")
    assert basic.client_secret is not None
    wrong_key = generate_rsa_key()
    forged = {**zitadel_project.app.key_file, "key": pkcs1_pem(wrong_key)}
    wrong_secret = "definitely-wrong-secret-value-1234"
    instances = {
        "normal": zitadel,
        "forged": zitadel_project.introspection(key_file=json.dumps(forged), max_retries=0),
        "basic": ZitadelIntrospection(
            standin.issuer,
            client_id=basic.client_id,
            client_secret=wrong_secret,
            project_id=zitadel_project.project.id,
        ),
    }
    apps = {name: app_for(instance) for name, instance in instances.items()}
    with LoopbackServer(apps["normal"]) as url:
        http = httpx.Client(base_url=url)
        calls: list[dict[str, str] | list[tuple[str, str]]] = [
            {"Authorization": f"Bearer {token()}"},
            {"Authorization": f"Bearer {token(scopes=['profile'])}"},  # 403
            {"Authorization": "Bearer unknown-but-secret-looking-token-value"},
            {"Authorization": f"Bearer {token()} extra"},
            {"Authorization": "Bearer " + "x" * 5000},
            [("Authorization", f"Bearer {token()}"), ("Authorization", f"Bearer {token()}")],
        ]
        tokens.extend(["unknown-but-secret-looking-token-value", "x" * 5000])
        for headers in calls:
            http.get("/me", headers=headers)
        # A token in the URL (refused): sent with urllib, because the *caller's* httpx would
        # log the URL itself, and it is our side that is under test here.
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{url}/me?access_token={token()}")  # noqa: S310
        faults: list[tuple[Injected, dict[str, Any]]] = [
            ("status", {"status": 500}),
            ("garbage", {}),
            ("drop", {}),
            ("latency", {"seconds": 1.0}),
            ("rate_limit", {"seconds": 3}),
        ]
        for fault, options in faults:
            standin.inject(fault, times=None, **options)
            http.get("/me", headers={"Authorization": f"Bearer {token()}"})
            standin.clear_faults()
        http.close()
    for name in ("forged", "basic"):
        with TestClient(apps[name]) as client:
            client.get("/me", headers={"Authorization": f"Bearer {token()}"})
    with TestClient(apps["normal"]) as client:
        with client.websocket_connect(f"/ws?access_token={token()}"):
            pass
        try:
            with client.websocket_connect("/ws?access_token=secret-looking-websocket-token"):
                pass
        except Exception as exc:  # the refusal itself
            errors.append(str(exc))
        tokens.append("secret-looking-websocket-token")
    # Exceptions raised by the engine, as a caller outside FastAPI would see them.
    import asyncio

    async def engine_errors() -> None:
        for instance in instances.values():
            for value in (token(), "engine-level-secret-token-abcdef"):
                try:
                    await instance.verify(value)
                except ZitadelError as exc:
                    errors.extend([str(exc), repr(exc), getattr(exc, "description", "")])
            await instance.aclose()

    tokens.append("engine-level-secret-token-abcdef")
    asyncio.run(engine_errors())

    secrets = [fragment for value in tokens for fragment in fragments(value)]
    secrets += [fragment for value in standin.received_assertions for fragment in fragments(value)]
    secrets += pem_lines(zitadel_project.app.key_file["key"]) + pem_lines(pkcs1_pem(wrong_key))
    secrets += [basic.client_secret, wrong_secret]
    assert len(standin.received_assertions) >= 5
    assert len(captured.texts) > 50  # the scenarios did log, at every level
    texts = captured.texts + errors
    leaks = [(secret[:12], text[:120]) for secret in secrets for text in texts if secret in text]
    assert leaks == [], "\n".join(f"{s}: {t}" for s, t in leaks)


def test_calling_other_apis_leaks_nothing(
    zitadel_project: StandInProject, captured: Everything
) -> None:
    """ServiceAccountAuth and TokenExchange, in every outcome, sync and async: no token, no
    assertion, no key, no secret in any log record or error."""
    import asyncio

    from fastapi_zitadel import ServiceAccountAuth, TokenExchange

    standin = zitadel_project.standin
    project = zitadel_project.project
    robot = zitadel_project.service_user("robot", roles=["reader"], with_secret=True)
    assert robot.client_secret is not None
    key_path = str(zitadel_project.service_key_path("robot"))
    exchange_grant = "urn:ietf:params:oauth:grant-type:token-exchange"
    gateway = standin.add_web_app(project, "gateway", auth="basic", grant_types=[exchange_grant])
    assert gateway.client_secret is not None
    wrong_secret = "wrong-service-secret-0123456789abcdef"
    errors: list[str] = []

    def keep(exc: ZitadelError) -> None:
        errors.extend([str(exc), repr(exc), exc.description, getattr(exc, "hint", "")])

    async def scenarios() -> None:
        good = ServiceAccountAuth(standin.issuer, key_file=key_path, project_id=project.id)
        token = await good.atoken()
        standin.revoke(token)
        good.invalidate(token)
        await good.atoken()
        for auth in (
            ServiceAccountAuth(
                standin.issuer, client_id=robot.username, client_secret=wrong_secret
            ),
            ServiceAccountAuth(
                standin.issuer, client_id="nobody", client_secret=robot.client_secret
            ),
        ):
            try:
                await auth.atoken()
            except ZitadelError as exc:
                keep(exc)
            await auth.aclose()
        exchange = TokenExchange(
            standin.issuer, client_id=gateway.client_id, client_secret=gateway.client_secret
        )
        user_token = zitadel_project.token("alice")
        exchanged = await exchange.aexchange(user_token)
        errors.append(repr(exchanged))
        for subject, options in ((token, {}), (user_token, {"audience": "elsewhere"})):
            try:
                await exchange.aexchange(subject, **options)
            except ZitadelError as exc:
                keep(exc)
        await exchange.aclose()
        await good.aclose()

    asyncio.run(scenarios())
    sync = ServiceAccountAuth(
        standin.issuer, client_id=robot.username, client_secret=robot.client_secret
    )
    with sync:
        sync.token()
    try:
        ServiceAccountAuth(standin.issuer, key_file=zitadel_project.app.key_file)
    except ZitadelError as exc:
        keep(exc)

    secrets = [fragment for value in standin.directory.tokens for fragment in fragments(value)]
    secrets += [fragment for value in standin.received_assertions for fragment in fragments(value)]
    secrets += pem_lines(robot.key_file["key"]) + pem_lines(zitadel_project.app.key_file["key"])
    secrets += [robot.client_secret, wrong_secret, gateway.client_secret]
    assert len(standin.directory.tokens) >= 4
    assert len(errors) >= 12
    texts = captured.texts + errors
    leaks = [(secret[:12], text[:120]) for secret in secrets for text in texts if secret in text]
    assert leaks == [], "\n".join(f"{s}: {t}" for s, t in leaks)
