"""Metrics counted across a scripted run, exact numbers; OpenTelemetry spans and counters,
none of them carrying a token."""

import asyncio
import hashlib
import hmac
import json
from datetime import datetime, timezone

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastapi_zitadel import (
    ClientCredentialsRejected,
    IdentityProviderUnavailable,
    InvalidTokenError,
)

from .helpers import World

SPANS = InMemorySpanExporter()
READER = InMemoryMetricReader()
_tracing = TracerProvider()
_tracing.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_tracing)
metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))


def metric_names() -> set[str]:
    """The names of every metric collected so far in this process."""
    collected = READER.get_metrics_data()
    assert collected is not None
    return {
        metric.name
        for resource in collected.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def test_scripted_run_counts_exactly(world: World) -> None:
    async with world.client(max_retries=0, circuit_breaker_threshold=2, stale_if_error=600) as z:
        good = world.token()
        await z.verify(good)  # miss, IdP active
        await z.verify(good)  # hit
        await z.verify(good)  # hit
        for _ in range(2):
            with pytest.raises(InvalidTokenError):
                await z.verify("unknown")  # miss + IdP inactive, then a negative hit
        world.standin.inject("latency", seconds=0.05)
        other = world.token()
        await asyncio.gather(*(z.verify(other) for _ in range(5)))  # 1 miss-call, 4 coalesced
        world.clock.advance(61)  # both cached entries are now stale
        world.standin.inject("status", status=503, times=None)
        await z.verify(good)  # miss, IdP unavailable, stale served
        with pytest.raises(IdentityProviderUnavailable):
            await z.verify("new-token")  # miss, IdP unavailable: the circuit opens
        with pytest.raises(IdentityProviderUnavailable):
            await z.verify("another")  # miss, circuit rejects
        snapshot = z.metrics()
    assert snapshot.cache_hits == 2
    assert snapshot.negative_hits == 1
    assert snapshot.misses == 1 + 1 + 5 + 1 + 1 + 1
    assert snapshot.coalesced_waits == 4
    assert snapshot.stale_served == 1
    assert snapshot.circuit_rejections == 1
    assert snapshot.idp_calls == {
        "active": 2,
        "inactive": 1,
        "unavailable": 2,
        "credentials_rejected": 0,
    }
    assert snapshot.idp_latency_count == 5
    assert snapshot.idp_latency_max >= 0.05
    assert snapshot.circuit_state == "open"
    assert snapshot.cache_size == 2
    assert snapshot.negative_cache_size == 0  # its 5 s lapsed with the clock's 61 s
    assert snapshot.in_flight == 0  # every introspection has finished
    assert snapshot.slots_in_use == 0


async def test_credentials_rejected_is_counted(world: World) -> None:
    forged = world.forged_key_file()
    async with world.client(key_file=forged) as zitadel:
        with pytest.raises(ClientCredentialsRejected):
            await zitadel.verify(world.token())
        assert zitadel.metrics().idp_calls["credentials_rejected"] == 1


async def test_opentelemetry_spans_and_counters(world: World) -> None:
    SPANS.clear()
    token = world.token()
    async with world.client() as zitadel:
        await zitadel.verify(token)
        await zitadel.verify(token)
        with pytest.raises(InvalidTokenError):
            await zitadel.verify("not-a-token-but-secret")
    spans = [s for s in SPANS.get_finished_spans() if s.name == "zitadel.introspect"]
    assert [(s.attributes or {})["fastapi_zitadel.outcome"] for s in spans] == [
        "active",
        "inactive",
    ]
    for span in spans:
        text = repr(dict(span.attributes or {}))
        assert token not in text
        assert "not-a-token-but-secret" not in text
    names = metric_names()
    assert {"fastapi_zitadel.lookups", "fastapi_zitadel.idp.calls"} <= names
    assert "fastapi_zitadel.idp.duration" in names


async def test_opentelemetry_event_counters_and_lag(world: World) -> None:
    """ZITADEL's events: counted by outcome (and refusal reason), their lag a histogram."""
    key = "otel-events-key"
    now = int(world.clock())
    body = json.dumps(
        {
            "aggregateID": "user-9",
            "aggregateType": "user",
            "sequence": 1,
            "event_type": "user.locked",
            "created_at": datetime.fromtimestamp(now - 2, tz=timezone.utc).isoformat(),
        }
    ).encode()
    mac = hmac.new(key.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    async with world.client(events_signing_key=key) as zitadel:
        transport = httpx.ASGITransport(app=zitadel.events_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            signed = {"ZITADEL-Signature": f"t={now},v1={mac}"}
            assert (await client.post("/", content=body, headers=signed)).status_code == 200
            assert (await client.post("/", content=body)).status_code == 401
        snapshot = zitadel.metrics()
        assert snapshot.events_lag_max == pytest.approx(2.0, abs=0.01)
        assert snapshot.events_applied == 1
        assert snapshot.events_refused == {"missing": 1}
        names = metric_names()
    # (the observable counters of the first instance made in this process answer for the
    # name; the figures themselves are checked through metrics() above)
    assert {"fastapi_zitadel.events", "fastapi_zitadel.events.lag"} <= names
