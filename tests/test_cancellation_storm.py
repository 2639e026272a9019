"""Clients that go away mid-request, by the thousand: no task left behind, no slot held, single
flight and the circuit breaker never stuck, and the next request served. On virtual time
(``tests/virtual_time.py``): cancellations land at seeded random moments of a burst against an
IdP that answers in 0.5 s, the same way on every run."""

import asyncio
import contextlib
import random
import time
from typing import Any

import httpx
import pytest

from fastapi_zitadel import IdentityProviderUnavailable, InvalidTokenError

from .helpers import alice_world
from .idp_support import SlowIdP, slow_world
from .virtual_time import run_on_virtual_time


async def storm(seed: int, requests: int, distinct: int, **options: Any) -> dict[str, Any]:
    rnd = random.Random(seed)
    async with slow_world(0.5, **options) as world:  # discovery done, IdP healthy
        zitadel = world.zitadel
        before = len(asyncio.all_tasks())
        # Half real tokens, half junk; many requests share a token (single flight).
        tokens = [world.token() if i % 2 else f"junk-{i}" for i in range(distinct)]
        tasks = [asyncio.ensure_future(zitadel.verify(rnd.choice(tokens))) for _ in range(requests)]
        cancelled = 0
        for _ in range(40):  # clients leave at random moments of the burst
            await asyncio.sleep(rnd.uniform(0, 0.3))
            for task in rnd.sample(tasks, requests // 40):
                cancelled += task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        unexpected = [
            o
            for o in outcomes
            if isinstance(o, BaseException)
            and not isinstance(
                o, (asyncio.CancelledError, InvalidTokenError, IdentityProviderUnavailable)
            )
        ]
        await asyncio.sleep(30)  # every deadline has passed: whatever was left has ended
        metrics = zitadel.metrics()
        result = {
            "cancelled": cancelled,
            "unexpected": unexpected,
            "tasks_left": len(asyncio.all_tasks()) - before,
            "in_flight": metrics.in_flight,
            "slots_in_use": metrics.slots_in_use,
            "circuit": zitadel.circuit_state,
        }
        principal = await zitadel.verify(world.token())
        result["next"] = principal.subject == world.user.id
        return result


def assert_nothing_stuck(result: dict[str, Any]) -> None:
    assert result["cancelled"] > 0
    assert result["unexpected"] == []
    assert result["tasks_left"] == 0
    assert result["in_flight"] == 0
    assert result["slots_in_use"] == 0
    assert result["circuit"] == "closed"
    assert result["next"]


def test_a_cancellation_storm_leaves_nothing_behind() -> None:
    assert_nothing_stuck(run_on_virtual_time(storm(0, requests=400, distinct=60)))


def test_a_cancellation_storm_on_a_full_queue() -> None:
    """5 slots, ``timeout=1``: most requests queue, many are cancelled while they wait."""
    result = run_on_virtual_time(
        storm(1, requests=600, distinct=200, max_concurrent_introspections=5, timeout=1)
    )
    assert_nothing_stuck(result)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(5))
def test_thousands_of_clients_leaving(seed: int) -> None:
    assert_nothing_stuck(run_on_virtual_time(storm(seed, requests=3000, distinct=300)))


async def cancelled_probe() -> tuple[str, str]:
    async with slow_world(0.2, max_retries=0) as world:  # discovery done, IdP healthy
        zitadel, idp = world.zitadel, world.idp
        idp.failing = True
        for i in range(5):
            with pytest.raises(IdentityProviderUnavailable):
                await zitadel.verify(f"junk-{i}")
        assert zitadel.circuit_state == "open"
        await asyncio.sleep(6)  # past the cooldown
        idp.failing = False
        probe = asyncio.ensure_future(zitadel.verify(world.token()))
        await asyncio.sleep(0.05)
        during = zitadel.circuit_state
        probe.cancel()  # its client left; the probe itself goes on for everyone else
        with pytest.raises(asyncio.CancelledError):
            await probe
        await asyncio.sleep(1)
        after = zitadel.circuit_state
        await zitadel.verify(world.token())
        return during, after


def test_a_probe_whose_client_left_still_closes_the_circuit() -> None:
    assert run_on_virtual_time(cancelled_probe()) == ("half-open", "closed")


# Over real HTTP: clients that hang up ---------------------------------------------------------


@pytest.mark.loopback
@pytest.mark.soak
async def test_clients_hanging_up_on_uvicorn_leave_nothing_behind() -> None:
    """200 HTTP clients give up after 10 to 400 ms against an IdP answering in 300 ms: uvicorn
    cancels their requests; the server ends with its tasks, slots and flights as before."""
    from typing import Annotated

    from fastapi import Depends, FastAPI

    from fastapi_zitadel import Principal
    from fastapi_zitadel.testing import LoopbackServer

    world = alice_world(roles=["reader"])
    # real uvicorn and real client timeouts: the instance's monotonic clock is the real one
    zitadel = world.client(
        transport=SlowIdP(world.standin.transport(), 0.3), monotonic=time.monotonic
    )
    app = FastAPI()
    zitadel.install(app)

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> str:
        return principal.subject or ""

    @app.get("/state")
    async def state() -> dict[str, Any]:
        metrics = zitadel.metrics()
        return {
            "tasks": len(asyncio.all_tasks()),
            "in_flight": metrics.in_flight,
            "slots": metrics.slots_in_use,
            "circuit": zitadel.circuit_state,
        }

    rnd = random.Random(7)
    tokens = [world.token() if i % 2 else f"junk-{i}" for i in range(50)]
    with LoopbackServer(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            await http.get("/me", headers={"Authorization": f"Bearer {tokens[1]}"})
            before = (await http.get("/state")).json()

            async def impatient(token: str) -> None:
                async with httpx.AsyncClient(base_url=url) as client:  # its own connection
                    with contextlib.suppress(httpx.TimeoutException):  # hung up
                        await client.get(
                            "/me",
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=rnd.uniform(0.01, 0.4),
                        )

            await asyncio.gather(*(impatient(rnd.choice(tokens)) for _ in range(200)))
            for _ in range(200):  # the abandoned lookups end within their 10 s deadline
                after = (await http.get("/state")).json()
                if after["in_flight"] == 0 and after["tasks"] <= before["tasks"]:
                    break
                await asyncio.sleep(0.1)
            fresh = world.token()
            answer = await http.get("/me", headers={"Authorization": f"Bearer {fresh}"})
    assert after["in_flight"] == 0
    assert after["slots"] == 0
    assert after["tasks"] <= before["tasks"]
    assert after["circuit"] == "closed"
    assert answer.status_code == 200
