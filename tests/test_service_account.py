"""``ServiceAccountAuth``: both grants against the stand-in, the token's schedule on a hand-moved
clock, single flight (async and threads), the 401 retry, and every failure typed and free of
secrets. Concurrency is made certain with held requests and events, never with sleeps."""

import asyncio
import base64
import logging
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import (
    ConfigurationError,
    InvalidTokenError,
    Principal,
    ServiceAccountAuth,
    TokenEndpointUnavailable,
    TokenExchange,
    TokenRequestRejected,
    WrongKeyTypeError,
    ZitadelIntrospection,
)
from fastapi_zitadel._outbound.service_account import REFUSAL_HOLD_OFF
from fastapi_zitadel.testing import LoopbackServer, StandInProject, User

from .helpers import STANDIN_ISSUER, FakeClock, World

ROLES_SCOPE = "urn:zitadel:iam:org:projects:roles"


def audience_scope(project_id: str) -> str:
    return f"urn:zitadel:iam:org:project:id:{project_id}:aud"


class HeldTokenRequests(httpx.AsyncBaseTransport):
    """Passes requests on to ``inner``; token requests wait until ``release()``, and the test
    sees how many arrived. ``fail_next`` answers the next token requests with 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, hold: bool = True) -> None:
        self._inner = inner
        self._released = asyncio.Event()
        self.arrived = asyncio.Event()
        if not hold:
            self._released.set()
        self.token_requests = 0
        self.fail_next = 0
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            self.token_requests += 1
            self.seen.append(request)
            self.arrived.set()
            await self._released.wait()
            if self.fail_next:
                self.fail_next -= 1
                return httpx.Response(503, json={"error": "unavailable"})
        return await self._inner.handle_async_request(request)

    def release(self) -> None:
        self._released.set()

    def hold(self) -> None:
        """Token requests from now on wait until ``release()``."""
        self._released.clear()
        self.arrived.clear()


@pytest.fixture
def robot(world: World) -> User:
    return world.standin.add_service_user(
        world.user.org, "robot", roles={world.project: ["reader"]}, with_secret=True
    )


def in_process(
    world: World, transport: httpx.AsyncBaseTransport | None = None, **options: Any
) -> ServiceAccountAuth:
    """A ServiceAccountAuth for ``world``'s stand-in, in-process, on the world's clock."""
    settings: dict[str, Any] = {
        "project_id": world.project.id,
        "http_client": httpx.AsyncClient(transport=transport or world.standin.transport()),
        "clock": world.clock,
        "monotonic": world.clock,
        **options,
    }
    return ServiceAccountAuth(STANDIN_ISSUER, **settings)


async def introspect(world: World, token: str) -> Principal:
    async with world.client() as zitadel:
        return await zitadel.verify(token)


# The two grants ---------------------------------------------------------------------------


async def test_jwt_bearer_grant_as_zitadel_checks_it(world: World, robot: User) -> None:
    auth = in_process(world, key_file=robot.key_file, roles=True)
    token = await auth.atoken()
    principal = await introspect(world, token)
    assert principal.subject == robot.id
    assert set(principal.roles) == {"reader"}
    assert principal.has_scope(audience_scope(world.project.id))
    # The grant's assertion: kid = key id, iss = sub = user id, aud = the issuer, iat back-dated,
    # a short life and a fresh jti.
    assertion = world.standin.received_assertions[0]  # then the introspection's own
    assert jwt.get_unverified_header(assertion)["kid"] == robot.key_id
    assert robot.private_key is not None
    claims = jwt.decode(  # times checked against the test's clock below, not this machine's
        assertion,
        robot.private_key.public_key(),
        algorithms=["RS256"],
        audience=STANDIN_ISSUER,
        options={"verify_iat": False, "verify_exp": False},
    )
    assert claims["iss"] == claims["sub"] == robot.id
    assert claims["iat"] < world.clock.now
    assert claims["exp"] - world.clock.now <= 60
    assert claims["jti"]
    await auth.aclose()


async def test_client_credentials_with_basic_auth(world: World, robot: User) -> None:
    transport = HeldTokenRequests(world.standin.transport(), hold=False)
    assert robot.client_secret is not None
    auth = in_process(world, transport, client_id=robot.username, client_secret=robot.client_secret)
    token = await auth.atoken()
    assert (await introspect(world, token)).subject == robot.id
    (sent,) = transport.seen
    scheme, _, encoded = sent.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{robot.username}:{robot.client_secret}"
    assert b"client_secret" not in sent.content  # client_secret_basic, not in the form
    await auth.aclose()


async def test_scopes_openid_audience_roles_and_others(world: World, robot: User) -> None:
    other = world.standin.add_project("billing")
    auth = in_process(
        world,
        key_file=robot.key_file,
        project_id=[world.project.id, other.id],
        roles=True,
        scopes=["profile", "openid"],
    )
    assert auth.scope == " ".join(
        [
            "openid",
            audience_scope(world.project.id),
            audience_scope(other.id),
            ROLES_SCOPE,
            "profile",
        ]
    )
    principal = await introspect(world, await auth.atoken())
    assert {world.project.id, other.id} <= set(principal.audience)
    await auth.aclose()


async def test_without_the_audience_scope_the_api_answers_inactive(
    world: World, robot: User
) -> None:
    auth = in_process(world, key_file=robot.key_file, project_id=None)
    assert auth.scope == "openid"
    with pytest.raises(InvalidTokenError):
        await introspect(world, await auth.atoken())
    await auth.aclose()


async def test_the_token_endpoint_comes_from_discovery(world: World, robot: User) -> None:
    """No path is assumed: a document naming another token endpoint is followed."""
    seen: list[str] = []
    standin_app = world.standin.app

    async def moved(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
            if scope["path"] == "/.well-known/openid-configuration":
                document = {"issuer": STANDIN_ISSUER, "token_endpoint": STANDIN_ISSUER + "/t/x"}
                await httpx_json(send, document)
                return
            if scope["path"] == "/t/x":
                scope = {**scope, "path": "/oauth/v2/token", "raw_path": b"/oauth/v2/token"}
        await standin_app(scope, receive, send)

    auth = in_process(world, httpx.ASGITransport(app=moved), key_file=robot.key_file)
    await auth.atoken()
    assert seen == ["/.well-known/openid-configuration", "/t/x"]
    await auth.aclose()


async def httpx_json(send: Any, document: dict[str, Any]) -> None:
    import json

    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# The schedule: cached, renewed before it lapses --------------------------------------------


async def test_cached_then_renewed_in_the_background_before_it_lapses(
    world: World, robot: User
) -> None:
    transport = HeldTokenRequests(world.standin.transport(), hold=False)
    auth = in_process(world, transport, key_file=robot.key_file, renew_before=0.25)
    first = await auth.atoken()
    for _ in range(10):
        assert await auth.atoken() == first
    assert transport.token_requests == 1
    lifetime = 43_200  # the stand-in's, as ZITADEL's default
    world.clock.advance(lifetime * 0.75 + 1)  # a quarter of its life left: due for renewal
    assert await auth.atoken() == first  # starts the renewal, and still gets the current one
    for _ in range(50):  # let the background renewal finish
        await asyncio.sleep(0)
        if transport.token_requests == 2 and await auth.atoken() != first:
            break
    renewed = await auth.atoken()
    assert renewed != first
    assert transport.token_requests == 2
    assert (await introspect(world, renewed)).subject == robot.id
    await auth.aclose()


async def test_aclose_cancels_a_renewal_still_running(world: World, robot: User) -> None:
    """The renewal runs in the auth's one task registry: closing it cancels the request."""
    transport = HeldTokenRequests(world.standin.transport(), hold=False)
    auth = in_process(world, transport, key_file=robot.key_file, renew_before=0.25)
    first = await auth.atoken()
    transport.hold()  # the renewal's request waits at the token endpoint
    world.clock.advance(43_200 * 0.75 + 1)
    assert await auth.atoken() == first  # starts the renewal
    await asyncio.wait_for(transport.arrived.wait(), 5)
    assert transport.token_requests == 2
    await auth.aclose()
    transport.release()
    for _ in range(10):
        await asyncio.sleep(0)
    assert await auth.atoken() == first  # the cancelled renewal kept nothing
    await auth.aclose()


async def test_a_lapsed_token_is_never_sent(world: World, robot: User) -> None:
    transport = HeldTokenRequests(world.standin.transport(), hold=False)
    auth = in_process(world, transport, key_file=robot.key_file)
    first = await auth.atoken()
    world.clock.advance(43_200)  # expired (and within its last seconds long before)
    second = await auth.atoken()  # waits for a new one
    assert second != first
    assert transport.token_requests == 2
    await auth.aclose()


async def test_a_failed_renewal_keeps_the_current_token(
    world: World, robot: User, caplog: pytest.LogCaptureFixture
) -> None:
    transport = HeldTokenRequests(world.standin.transport(), hold=False)
    auth = in_process(world, transport, key_file=robot.key_file, max_retries=0)
    first = await auth.atoken()
    world.clock.advance(43_200 * 0.9)
    transport.fail_next = 1
    with caplog.at_level(logging.WARNING, "fastapi_zitadel"):
        assert await auth.atoken() == first  # renewal starts, fails in the background
        for _ in range(50):
            await asyncio.sleep(0)
            if "renewing the access token" in caplog.text:
                break
    assert "renewing the access token of service user" in caplog.text
    assert await auth.atoken() == first  # retried later, not on every request
    assert transport.token_requests == 2
    world.clock.advance(60)
    assert await auth.atoken() == first
    for _ in range(50):
        await asyncio.sleep(0)
        if await auth.atoken() != first:
            break
    assert await auth.atoken() != first
    await auth.aclose()


# Single flight ---------------------------------------------------------------------------


async def test_fifty_concurrent_requests_on_a_cold_auth_make_one_token_request(
    world: World, robot: User
) -> None:
    transport = HeldTokenRequests(world.standin.transport())
    auth = in_process(world, transport, key_file=robot.key_file)
    waiting = [asyncio.ensure_future(auth.atoken()) for _ in range(50)]
    await transport.arrived.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    transport.release()
    tokens = await asyncio.gather(*waiting)
    assert len(set(tokens)) == 1
    assert transport.token_requests == 1
    assert auth.token_requests == 1
    await auth.aclose()


def test_fifty_threads_on_a_cold_auth_make_one_token_request(
    zitadel_project: StandInProject,
) -> None:
    zitadel_project.service_user("robot", roles=["reader"])
    standin = zitadel_project.standin
    auth = ServiceAccountAuth(
        standin.issuer,
        key_file=zitadel_project.service_key_path("robot"),
        project_id=zitadel_project.project.id,
    )
    started = threading.Barrier(50)
    tokens: list[str] = []

    def call() -> None:
        started.wait()
        tokens.append(auth.token())

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tokens) == 50
    assert len(set(tokens)) == 1
    assert standin.token_calls == 1
    auth.close()


# Over real HTTP, sync and async, with the 401 retry ----------------------------------------


def protected_api(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {"sub": principal.subject, "roles": sorted(principal.roles)}

    @app.post("/echo")
    async def echo(principal: Annotated[Principal, Depends(zitadel)], body: dict[str, Any]) -> Any:
        return body

    return app


@pytest.fixture
def api(zitadel_project: StandInProject) -> Iterator[str]:
    # No result cache: a revoked token is refused at once.
    zitadel = zitadel_project.introspection(cache_ttl=0, negative_cache_ttl=0)
    with LoopbackServer(protected_api(zitadel)) as url:
        yield url


def test_sync_client_over_loopback(zitadel_project: StandInProject, api: str) -> None:
    robot = zitadel_project.service_user("robot", roles=["reader"], with_secret=True)
    assert robot.client_secret is not None
    for credentials in (
        {"key_file": zitadel_project.service_key_path("robot")},
        {"client_id": robot.username, "client_secret": robot.client_secret},
    ):
        auth = ServiceAccountAuth(
            zitadel_project.standin.issuer, project_id=zitadel_project.project.id, **credentials
        )
        with auth, httpx.Client(base_url=api, auth=auth) as http:
            answer = http.get("/whoami")
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"sub": robot.id, "roles": ["reader"]}


async def test_async_client_over_loopback_retries_once_after_invalid_token(
    zitadel_project: StandInProject, api: str
) -> None:
    zitadel_project.service_user("robot", roles=["reader"])
    standin = zitadel_project.standin
    auth = ServiceAccountAuth(
        standin.issuer,
        key_file=zitadel_project.service_key_path("robot"),
        project_id=zitadel_project.project.id,
    )
    async with auth, httpx.AsyncClient(base_url=api, auth=auth) as http:
        assert (await http.get("/whoami")).status_code == 200
        first = await auth.atoken()
        standin.revoke(first)  # the API now answers 401 invalid_token for it
        calls = standin.token_calls
        again = await http.post("/echo", json={"n": 1})  # bytes: sent again with a new token
        assert again.status_code == 200
        assert again.json() == {"n": 1}
        assert standin.token_calls == calls + 1
        assert await auth.atoken() != first


def test_sync_retry_and_no_retry_for_a_stream(zitadel_project: StandInProject, api: str) -> None:
    zitadel_project.service_user("robot")
    standin = zitadel_project.standin
    monotonic = FakeClock(1000.0)
    auth = ServiceAccountAuth(
        standin.issuer,
        key_file=zitadel_project.service_key_path("robot"),
        project_id=zitadel_project.project.id,
        monotonic=monotonic,
    )
    with auth, httpx.Client(base_url=api, auth=auth) as http:
        standin.revoke(auth.token())
        assert http.get("/whoami").status_code == 200  # retried with a new token
        standin.revoke(auth.token())
        monotonic.advance(REFUSAL_HOLD_OFF)  # 401s renew a token at most this often

        def body() -> Iterator[bytes]:
            yield b'{"n": 2}'

        streamed = http.post("/echo", content=body(), headers={"content-type": "application/json"})
        assert streamed.status_code == 401  # a stream cannot be sent twice: the 401 is returned
        assert http.post("/echo", json={"n": 3}).status_code == 200  # the next one has a new token


async def test_other_401s_are_not_retried(world: World, robot: User) -> None:
    calls = 0

    async def api(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        headers = [(b"www-authenticate", b'Bearer realm="api", error="insufficient_scope"')]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    auth = in_process(world, key_file=robot.key_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), auth=auth) as http:
        assert (await http.get("http://api.localhost/x")).status_code == 401
    assert calls == 1
    await auth.aclose()


# Failures: typed, actionable, no secrets ---------------------------------------------------


async def test_a_service_users_deleted_key_is_named_with_the_fix(
    world: World, robot: User, caplog: pytest.LogCaptureFixture
) -> None:
    assert robot.key_id is not None
    key_file = robot.key_file
    del world.standin.directory.keys[robot.key_id]  # deleted in ZITADEL
    auth = in_process(world, key_file=key_file, max_retries=1)
    with (
        caplog.at_level(logging.DEBUG, "fastapi_zitadel"),
        pytest.raises(TokenRequestRejected) as rejected,
    ):
        await auth.atoken()
    error = rejected.value
    # ZITADEL answers an assertion it cannot verify with 500 server_error (zitadel#12692).
    assert (error.status, error.error_code) == (500, "server_error")
    assert error.key_id == robot.key_id
    assert error.client_id == robot.id
    assert robot.key_id in error.description
    assert "Users > Service Users" in error.hint
    assert error.status_code == 503  # a route that cannot call its API answers 503
    text = caplog.text + str(error) + error.hint
    assert key_file["key"][40:80] not in text
    for assertion in world.standin.received_assertions:
        assert assertion not in text
    await auth.aclose()


async def test_a_wrong_secret_is_named_with_zitadels_code(
    world: World, robot: User, caplog: pytest.LogCaptureFixture
) -> None:
    auth = in_process(world, client_id=robot.username, client_secret="not-the-secret-at-all")
    with (
        caplog.at_level(logging.DEBUG, "fastapi_zitadel"),
        pytest.raises(TokenRequestRejected) as rejected,
    ):
        await auth.atoken()
    error = rejected.value
    assert (error.status, error.error_code) == (400, "invalid_request")
    assert "Errors.User.Machine.Secret.Invalid" in error.description
    assert robot.username in error.description
    assert "user name" in error.hint
    assert "not-the-secret-at-all" not in caplog.text + str(error) + error.hint
    assert "the token endpoint rejected" in caplog.text
    # A burst of calls after a rejection does not become a burst of token requests.
    calls = world.standin.token_calls
    with pytest.raises(TokenRequestRejected):
        await auth.atoken()
    assert world.standin.token_calls == calls
    world.clock.advance(11)
    with pytest.raises(TokenRequestRejected):
        await auth.atoken()
    assert world.standin.token_calls == calls + 1
    await auth.aclose()


def test_keys_of_the_wrong_kind_say_which_key_goes_where(world: World, robot: User) -> None:
    with pytest.raises(WrongKeyTypeError) as given_app_key:
        ServiceAccountAuth(STANDIN_ISSUER, key_file=world.app.key_file)
    message = str(given_app_key.value)
    assert "ServiceAccountAuth" in message
    assert "service user's key" in message
    assert world.app.client_id in message
    assert given_app_key.value.key_type == "application"
    with pytest.raises(WrongKeyTypeError) as given_user_key:
        ZitadelIntrospection(STANDIN_ISSUER, key_file=robot.key_file)
    message = str(given_user_key.value)
    assert "ZitadelIntrospection" in message
    assert "API application" in message
    assert "ServiceAccountAuth" in message
    assert given_user_key.value.needed == "application"
    assert "PRIVATE KEY" not in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs the service user's key"),
        ({"client_id": "robot"}, "needs the service user's key"),
        ({"client_id": "a", "client_secret": "b", "key_file": "k.json"}, "not both"),
        ({"client_id": "a", "client_secret": "b", "timeout": 0}, "timeout must be"),
        ({"client_id": "a", "client_secret": "b", "renew_before": 1.5}, "renew_before"),
        ({"client_id": "a", "client_secret": "b", "scopes": "profile"}, "a list of scopes"),
        ({"client_id": "a", "client_secret": "b", "project_id": "a b"}, "project_id must"),
    ],
)
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ServiceAccountAuth(STANDIN_ISSUER, **options)


def test_issuer_rules() -> None:
    with pytest.raises(ConfigurationError, match="must not end with '/'"):
        ServiceAccountAuth(STANDIN_ISSUER + "/", client_id="a", client_secret="b")
    with pytest.raises(ConfigurationError, match="plain http"):
        ServiceAccountAuth("http://zitadel.internal", client_id="a", client_secret="b")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"issuer": STANDIN_ISSUER + "/.well-known/openid-configuration"}, "discovery document"),
        ({"max_retries": 11}, "max_retries must be less than or equal to 10"),
        ({"timeout": 301}, "timeout must be less than or equal to 300"),
    ],
)
def test_outbound_clients_share_the_configurations_rules(
    options: dict[str, Any], message: str
) -> None:
    """ServiceAccountAuth and TokenExchange are checked by ZitadelConfig's own rules."""
    settings = {"issuer": STANDIN_ISSUER, "client_id": "a", "client_secret": "b", **options}
    with pytest.raises(ConfigurationError, match=message):
        ServiceAccountAuth(**settings)
    with pytest.raises(ConfigurationError, match=message):
        TokenExchange(**settings)
    with pytest.raises(ConfigurationError, match=message.split(" must")[0]):
        ZitadelIntrospection(**settings)


async def test_unreachable_token_endpoint(world: World, robot: User) -> None:
    auth = ServiceAccountAuth("http://127.0.0.1:9", key_file=robot.key_file, max_retries=0)
    with pytest.raises(TokenEndpointUnavailable) as unavailable:
        await auth.atoken()
    assert "cannot find the token endpoint" in unavailable.value.description
    with pytest.raises(TokenEndpointUnavailable):
        auth.token()
    await auth.aclose()


async def test_slow_token_endpoint_is_bounded_by_timeout(world: World, robot: User) -> None:
    never = asyncio.Event()

    class Stuck(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/token"):
                await never.wait()
            return await world.standin.transport().handle_async_request(request)

    auth = ServiceAccountAuth(
        STANDIN_ISSUER,
        key_file=robot.key_file,
        timeout=0.2,
        http_client=httpx.AsyncClient(transport=Stuck()),
    )
    with pytest.raises(TokenEndpointUnavailable) as unavailable:
        await auth.atoken()
    assert "timed out" in unavailable.value.description or "within" in unavailable.value.description
    await auth.aclose()


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (200, b"<html>hello</html>", "text/html", "answer unusable"),
        (200, b'{"token_type": "Bearer"}', "application/json", "no access_token"),
        (200, b'{"access_token": "x", "token_type": "mac"}', "application/json", "not a bearer"),
        (502, b"bad gateway", "text/plain", "answered HTTP 502"),
        (405, b"", "text/plain", "refused: HTTP 405"),
    ],
)
async def test_nonsense_from_the_token_endpoint(
    world: World, robot: User, status: int, body: bytes, content_type: str, expected: str
) -> None:
    class Nonsense(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/token"):
                return httpx.Response(status, content=body, headers={"content-type": content_type})
            return await world.standin.transport().handle_async_request(request)

    auth = in_process(world, Nonsense(), key_file=robot.key_file, max_retries=0)
    with pytest.raises(TokenEndpointUnavailable) as unavailable:
        await auth.atoken()
    assert expected in unavailable.value.description
    await auth.aclose()


def test_repr_shows_no_secret(robot: User) -> None:
    assert robot.client_secret is not None
    auth = ServiceAccountAuth(
        STANDIN_ISSUER, client_id=robot.username, client_secret=robot.client_secret
    )
    assert robot.client_secret not in repr(auth)
    assert robot.username in repr(auth)


def test_sync_renewal_before_it_lapses(zitadel_project: StandInProject) -> None:
    zitadel_project.service_user("robot")
    standin = zitadel_project.standin
    clock = FakeClock()  # the auth's schedule only: the stand-in keeps real time
    auth = ServiceAccountAuth(
        standin.issuer,
        key_file=zitadel_project.service_key_path("robot"),
        project_id=zitadel_project.project.id,
        monotonic=clock,
    )
    with auth:
        first = auth.token()
        clock.advance(43_200 * 0.5)
        assert auth.token() == first  # not due yet
        clock.advance(43_200 * 0.35)  # 15 % left, under renew_before: this call renews
        renewed = auth.token()
        assert renewed != first
        assert standin.token_calls == 2
        assert auth.token() == renewed
