"""Fault injection over real HTTP: the protected app and the stand-in on loopback, a TCP proxy
between library and IdP. For each fault: the status, the headers, the time taken (within the
deadline plus a margin), recovery once it clears, and nothing left running."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, StandInProject

from .tcp_proxy import TcpProxy

DEADLINE = 1.0
MARGIN = 1.0


@dataclass
class Rig:
    project: StandInProject
    proxy: TcpProxy
    zitadel: ZitadelIntrospection
    url: str

    def get(self, token: str | None) -> tuple[httpx.Response, float]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.monotonic()
        response = httpx.get(self.url + "/items", headers=headers, timeout=30)
        return response, time.monotonic() - started


@pytest.fixture
def rig(zitadel_project: StandInProject) -> Iterator[Rig]:
    standin = zitadel_project.standin
    port = int(standin.issuer.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        zitadel = zitadel_project.introspection(
            introspection_endpoint=proxy.url + "/oauth/v2/introspect",
            timeout=DEADLINE,
            max_retries=1,
            circuit_breaker_threshold=0,
        )
        app = FastAPI()
        zitadel.install(app)

        @app.get("/items")
        async def items(
            principal: Annotated[Principal, Depends(zitadel.require_role("reader"))],
        ) -> list[str]:
            return ["apple"]

        with LoopbackServer(app) as url:
            yield Rig(zitadel_project, proxy, zitadel, url)


def standin_fault(kind: Any, **options: Any) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        rig.project.standin.inject(kind, times=None, **options)

    return apply


def proxy_fault(mode: Any, delay: float = 0.0) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        rig.proxy.set_mode(mode, delay)

    return apply


FAULTS = {
    "slow IdP": (standin_fault("latency", seconds=1.5), 503),
    "IdP 500": (standin_fault("status", status=500), 503),
    "IdP 429": (standin_fault("rate_limit", seconds=30), 503),
    "IdP answers HTML": (standin_fault("garbage"), 503),
    "IdP drops the connection": (standin_fault("drop"), 503),
    "IdP internal error as inactive": (standin_fault("inactive"), 401),
    "network delay": (proxy_fault("delay", 1.5), 503),
    "connection reset": (proxy_fault("reset"), 503),
    "accepted, never answered": (proxy_fault("blackhole"), 503),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(rig: Rig, fault: str) -> None:
    apply, expected = FAULTS[fault]
    assert rig.get(rig.project.token("bob", roles=["reader"]))[0].status_code == 200
    apply(rig)
    response, elapsed = rig.get(rig.project.token("bob"))
    assert response.status_code == expected, response.text
    assert elapsed < DEADLINE + MARGIN, f"{fault} took {elapsed:.2f} s"
    if expected == 503:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["detail"]["error"] == "temporarily_unavailable"
        if fault == "IdP 429":
            assert response.headers["retry-after"] == "30"
    else:
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    # Recovery: the fault clears, the next request works.
    rig.project.standin.clear_faults()
    rig.proxy.set_mode("forward")
    recovered, _ = rig.get(rig.project.token("bob"))
    assert recovered.status_code == 200
    # Nothing left running: no shared lookups, no held slots, a bounded number of sockets.
    deadline = time.monotonic() + DEADLINE + MARGIN
    busy = rig.zitadel.metrics
    while (busy().in_flight or busy().slots_in_use) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy().in_flight == 0
    assert busy().slots_in_use == 0
    assert rig.proxy.open_connections <= 20
