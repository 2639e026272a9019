"""Fault injection over real HTTP: the protected app and the stand-in on loopback, a TCP proxy
between library and IdP. For each fault: the status, the headers, the cause the library logs
(for the slow ones: its deadline, not the fault, ended the wait), recovery once it clears,
and nothing left running."""

import logging
import re
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
TIMED_OUT = r"timed out after|did not answer within"  # the deadline's own words


@dataclass
class Rig:
    project: StandInProject
    proxy: TcpProxy
    zitadel: ZitadelIntrospection
    url: str

    def get(self, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # 30 s only keeps a broken library from hanging the test; it measures nothing.
        return httpx.get(self.url + "/items", headers=headers, timeout=30)


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


# fault: (how to apply it, the status, the cause in the library's outage log or None)
FAULTS: dict[str, tuple[Callable[[Rig], None], int, str | None]] = {
    "slow IdP": (standin_fault("latency", seconds=1.5), 503, TIMED_OUT),
    "IdP 500": (standin_fault("status", status=500), 503, r"answered HTTP 500"),
    "IdP 429": (standin_fault("rate_limit", seconds=30), 503, r"answered HTTP 429"),
    "IdP answers HTML": (standin_fault("garbage"), 503, r"not JSON"),
    "IdP drops the connection": (standin_fault("drop"), 503, r"unreachable"),
    "IdP internal error as inactive": (standin_fault("inactive"), 401, None),
    "network delay": (proxy_fault("delay", 1.5), 503, TIMED_OUT),
    "connection reset": (proxy_fault("reset"), 503, r"unreachable"),
    "accepted, never answered": (proxy_fault("blackhole"), 503, TIMED_OUT),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault(rig: Rig, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    apply, expected, cause = FAULTS[fault]
    assert rig.get(rig.project.token("bob", roles=["reader"])).status_code == 200
    apply(rig)
    response = rig.get(rig.project.token("bob"))
    assert response.status_code == expected, response.text
    outages = [
        r.getMessage() for r in caplog.records if "identity provider unavailable" in r.getMessage()
    ]
    if expected == 503:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["detail"]["error"] == "temporarily_unavailable"
        if fault == "IdP 429":
            assert response.headers["retry-after"] == "30"
        assert cause is not None
        assert len(outages) == 1, outages
        assert re.search(cause, outages[0]), outages[0]
    else:
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert outages == []
    # Recovery: the fault clears, the next request works.
    rig.project.standin.clear_faults()
    rig.proxy.set_mode("forward")
    recovered = rig.get(rig.project.token("bob"))
    assert recovered.status_code == 200
    # Nothing left running: every shared lookup ends before its callers are answered.
    running = rig.zitadel.metrics()
    assert running.in_flight == 0
    assert running.slots_in_use == 0
    assert rig.proxy.open_connections <= 20
