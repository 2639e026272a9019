"""Token exchange (RFC 8693) as ZITADEL does it, and ``Principal.actor``: a gateway calls the
shop API on behalf of its user, narrowed to the shop's audience, as itself or with a service
user acting (``act``); every refusal ZITADEL makes is typed and says what to change."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import (
    Actor,
    InvalidTokenError,
    Principal,
    ServiceAccountAuth,
    TokenEndpointUnavailable,
    TokenExchange,
    TokenExchangeRejected,
    TokenRequestRejected,
    WrongKeyTypeError,
    ZitadelIntrospection,
)
from fastapi_zitadel._exceptions import MalformedClaimError
from fastapi_zitadel.testing import (
    LoopbackServer,
    Project,
    StandInProject,
    User,
    WebApplication,
    ZitadelStandIn,
)

from .helpers import STANDIN_ISSUER, FakeClock, World

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def aud(project: Project) -> str:
    return f"urn:zitadel:iam:org:project:id:{project.id}:aud"


@dataclass
class Gateway:
    """The middle service: an OIDC application of its own project, allowed to exchange."""

    project: Project
    app: WebApplication
    user_token: str  # alice's, for the gateway and (audience scope) the shop


@pytest.fixture
def gateway(world: World) -> Gateway:
    project = world.standin.add_project("gateway")
    app = world.standin.add_web_app(
        project, "gateway", auth="private_key_jwt", grant_types=["authorization_code", EXCHANGE]
    )
    token = world.standin.issue_token(
        world.user, project, scopes=["openid", "profile", aud(world.project)]
    )
    return Gateway(project, app, token)


def exchanger(world: World, gateway: Gateway, **options: Any) -> TokenExchange:
    settings: dict[str, Any] = {
        "key_file": gateway.app.key_file,
        "http_client": httpx.AsyncClient(transport=world.standin.transport()),
        "clock": world.clock,
        "monotonic": world.clock,
        "max_retries": 0,
        **options,
    }
    return TokenExchange(STANDIN_ISSUER, **settings)


def actor_auth(world: World, actor: User, gateway: Gateway) -> ServiceAccountAuth:
    return ServiceAccountAuth(
        STANDIN_ISSUER,
        key_file=actor.key_file,
        project_id=gateway.project.id,  # the actor token must be for the exchanging app too
        http_client=httpx.AsyncClient(transport=world.standin.transport()),
        clock=world.clock,
        monotonic=world.clock,
    )


async def test_exchange_narrows_the_audience_to_the_downstream_api(
    world: World, gateway: Gateway
) -> None:
    exchange = exchanger(world, gateway)
    exchanged = await exchange.aexchange(gateway.user_token, audience=world.project.id)
    assert exchanged.token_type == "Bearer"
    assert exchanged.issued_token_type == "urn:ietf:params:oauth:token-type:access_token"
    assert exchanged.scopes == {"openid", "profile", aud(world.project)}
    assert exchanged.access_token not in repr(exchanged)
    async with world.client() as shop:
        principal = await shop.verify(exchanged.access_token)
    assert principal.subject == world.user.id
    assert principal.client_id == gateway.app.client_id
    assert principal.actor is None  # no actor token: the gateway is not named as an actor
    assert world.project.id in principal.audience
    assert gateway.project.id not in principal.audience
    await exchange.aclose()


async def test_delegation_names_the_actor(world: World, gateway: Gateway) -> None:
    actor = world.standin.add_service_user(world.user.org, "gateway-robot")
    actor.can_impersonate = True  # ORG_END_USER_IMPERSONATOR
    acting = actor_auth(world, actor, gateway)
    exchange = exchanger(world, gateway, actor=acting)
    exchanged = await exchange.aexchange(gateway.user_token, audience=[world.project.id])
    async with world.client() as shop:
        principal = await shop.verify(exchanged.access_token)
    assert principal.subject == world.user.id
    assert principal.actor == Actor(subject=actor.id, issuer=STANDIN_ISSUER)
    assert principal.claims["act"] == {"iss": STANDIN_ISSUER, "sub": actor.id}
    await exchange.aclose()
    await acting.aclose()


@pytest.mark.parametrize(
    ("case", "error_code", "hint"),
    [
        ("audience not in the subject token", "invalid_target", "never widens the audience"),
        ("scope not in the subject token", "invalid_scope", "must already be in"),
        ("subject token of another project", "invalid_request", "issued for this application"),
        ("impersonation off", "invalid_request", "Allow Impersonation"),
        ("actor without the role", "invalid_request", "impersonator role"),
    ],
)
async def test_refusals_are_typed_with_the_fix(
    world: World, gateway: Gateway, case: str, error_code: str, hint: str
) -> None:
    other = world.standin.add_project("billing")
    actor = world.standin.add_service_user(world.user.org, "gateway-robot")
    actor.can_impersonate = case != "actor without the role"
    acting = actor_auth(world, actor, gateway)
    world.standin.impersonation = case != "impersonation off"
    uses_actor = case in ("impersonation off", "actor without the role")
    exchange = exchanger(world, gateway, actor=acting if uses_actor else None)
    subject = gateway.user_token
    options: dict[str, Any] = {}
    if case == "audience not in the subject token":
        options["audience"] = other.id
    elif case == "scope not in the subject token":
        options["scopes"] = ["email"]
    elif case == "subject token of another project":
        subject = world.token()  # for the shop only, not the gateway
    with pytest.raises(TokenExchangeRejected) as refused:
        await exchange.aexchange(subject, **options)
    assert refused.value.error_code == error_code
    assert hint in refused.value.hint
    assert refused.value.status_code == 503
    assert subject not in str(refused.value)
    await exchange.aclose()
    await acting.aclose()


async def test_only_oidc_applications_with_the_grant_may_exchange(
    world: World, gateway: Gateway
) -> None:
    not_allowed = world.standin.add_web_app(gateway.project, "spa", auth="private_key_jwt")
    exchange = exchanger(world, gateway, key_file=not_allowed.key_file)
    with pytest.raises(TokenRequestRejected) as refused:
        await exchange.aexchange(gateway.user_token)
    assert refused.value.error_code == "unauthorized_client"
    assert "Token Exchange grant type" in refused.value.hint
    await exchange.aclose()
    # An API application is no OIDC client: ZITADEL does not find it.
    api_app = exchanger(world, gateway, key_file=world.app.key_file)
    with pytest.raises(TokenRequestRejected) as unknown:
        await api_app.aexchange(gateway.user_token)
    assert unknown.value.error_code == "invalid_client"
    assert "API applications cannot exchange" in unknown.value.hint
    await api_app.aclose()


def test_a_service_users_key_is_not_an_applications(world: World) -> None:
    robot = world.standin.add_service_user(world.user.org, "robot")
    with pytest.raises(WrongKeyTypeError, match="TokenExchange"):
        TokenExchange(STANDIN_ISSUER, key_file=robot.key_file)


# Over real HTTP: the gateway calls the shop on behalf of its caller -------------------------


def shop_api(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        actor = principal.actor.subject if principal.actor else None
        return {"sub": principal.subject, "actor": actor}

    return app


@pytest.fixture
def shop(zitadel_project: StandInProject) -> Iterator[str]:
    with LoopbackServer(shop_api(zitadel_project.introspection())) as url:
        yield url


def test_sync_exchange_and_call_over_loopback(zitadel_project: StandInProject, shop: str) -> None:
    standin: ZitadelStandIn = zitadel_project.standin
    gateway_project = standin.add_project("gateway")
    app = standin.add_web_app(gateway_project, "gateway", auth="basic", grant_types=[EXCHANGE])
    assert app.client_secret is not None
    alice = zitadel_project.user("alice")
    token = standin.issue_token(
        alice, gateway_project, scopes=["openid", aud(zitadel_project.project)]
    )
    robot = zitadel_project.service_user("gateway-robot")
    robot.can_impersonate = True
    acting = ServiceAccountAuth(
        standin.issuer,
        key_file=zitadel_project.service_key_path("gateway-robot"),
        project_id=gateway_project.id,
    )
    with (
        acting,
        TokenExchange(
            standin.issuer, client_id=app.client_id, client_secret=app.client_secret, actor=acting
        ) as exchange,
    ):
        exchanged = exchange.exchange(token, audience=zitadel_project.project.id)
        answer = httpx.get(shop + "/whoami", auth=exchanged)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"sub": alice.id, "actor": robot.id}
    # Narrowed to the shop: the gateway's own API does not accept it any more.
    gateway_api = standin.add_api_app(gateway_project, "gateway-api")

    async def verify_at_the_gateway() -> None:
        async with ZitadelIntrospection(standin.issuer, key_file=gateway_api.key_file) as check:
            await check.verify(exchanged.access_token)

    with pytest.raises(InvalidTokenError):
        asyncio.run(verify_at_the_gateway())


# Discovery at a cold start: one fetch for a burst of exchanges ---------------------------------

_DISCOVERY = "/.well-known/openid-configuration"
_BURST = 50
_GATE = 0.5  # seconds the first discovery answer waits for the rest of a burst that never comes


class ColdIdp:
    """A hand-made IdP whose discovery answer waits until the whole burst has asked (or
    ``_GATE`` passed): with one fetch per burst only the first caller ever gets there, without
    it every caller does and they are answered together. Counts requests by path."""

    def __init__(self, discovery_status: int = 200) -> None:
        self.discovery_status = discovery_status
        self.counts: dict[str, int] = {}
        self._all_asked = asyncio.Event()
        self._all_asked_sync = threading.Event()
        self._lock = threading.Lock()

    def _count(self, request: httpx.Request) -> bool:
        """Count ``request``; true once the whole burst asked for the discovery document."""
        with self._lock:
            path = request.url.path
            self.counts[path] = self.counts.get(path, 0) + 1
            return self.counts[path] >= _BURST

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != _DISCOVERY:
            return httpx.Response(
                200, json={"access_token": "x", "token_type": "Bearer", "expires_in": 60}
            )
        if self.discovery_status != 200:
            return httpx.Response(self.discovery_status)
        document = {"issuer": STANDIN_ISSUER, "token_endpoint": STANDIN_ISSUER + "/oauth/v2/token"}
        return httpx.Response(200, json=document)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self._count(request):
            self._all_asked.set()
        if request.url.path == _DISCOVERY:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_asked.wait(), _GATE)
        return self._answer(request)

    def handle_sync(self, request: httpx.Request) -> httpx.Response:
        if self._count(request):
            self._all_asked_sync.set()
        if request.url.path == _DISCOVERY:
            self._all_asked_sync.wait(_GATE)
        return self._answer(request)

    def exchange(self, **options: Any) -> TokenExchange:
        return TokenExchange(
            STANDIN_ISSUER,
            client_id="gateway",
            client_secret="s",
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.handle)),
            sync_http_client=httpx.Client(transport=httpx.MockTransport(self.handle_sync)),
            max_retries=0,
            **options,
        )


async def test_concurrent_exchanges_share_one_discovery() -> None:
    idp = ColdIdp()
    async with idp.exchange() as exchange:
        await asyncio.gather(*(exchange.aexchange(f"subject-{i}") for i in range(_BURST)))
    assert idp.counts == {_DISCOVERY: 1, "/oauth/v2/token": _BURST}


def test_threads_exchanging_share_one_discovery() -> None:
    idp = ColdIdp()
    with idp.exchange() as exchange, ThreadPoolExecutor(_BURST) as threads:
        list(threads.map(lambda i: exchange.exchange(f"subject-{i}"), range(_BURST)))
    assert idp.counts == {_DISCOVERY: 1, "/oauth/v2/token": _BURST}


async def test_a_failed_discovery_burst_is_one_failure(clock: FakeClock) -> None:
    """One 503 met by a burst is one failed fetch: everyone gets the first pause (1 s, give
    or take its jitter), not one doubled per caller up to the 60 s cap."""
    idp = ColdIdp(discovery_status=503)
    async with idp.exchange(monotonic=clock) as exchange:
        failures = await asyncio.gather(
            *(exchange.aexchange(f"subject-{i}") for i in range(_BURST)), return_exceptions=True
        )
    assert idp.counts == {_DISCOVERY: 1}
    assert all(isinstance(failure, TokenEndpointUnavailable) for failure in failures)
    pauses = {f.retry_after for f in failures if isinstance(f, TokenEndpointUnavailable)}
    assert len(pauses) == 1
    assert all(pause is not None and 0.8 <= pause <= 1.2 for pause in pauses)


# Principal.actor from the act claim -----------------------------------------------------------


def test_actor_chain_is_read_from_act() -> None:
    principal = Principal.from_claims(
        {"sub": "alice", "act": {"iss": "https://z", "sub": "robot", "act": {"sub": "admin"}}}
    )
    assert principal.actor == Actor(
        subject="robot", issuer="https://z", actor=Actor(subject="admin")
    )
    assert Principal.from_claims({"sub": "alice"}).actor is None
    dumped = principal.model_dump(mode="json")["actor"]
    assert dumped["actor"]["subject"] == "admin"


@pytest.mark.parametrize("act", ["robot", ["robot"], {"sub": 42}, {"sub": "a", "act": "b"}])
def test_a_malformed_act_is_refused(act: Any) -> None:
    with pytest.raises(MalformedClaimError):
        Principal.from_claims({"sub": "alice", "act": act})


def test_act_nesting_is_bounded() -> None:
    act: dict[str, Any] = {"sub": "last"}
    for depth in range(20):
        act = {"sub": f"a{depth}", "act": act}
    with pytest.raises(MalformedClaimError):
        Principal.from_claims({"sub": "alice", "act": act})
