"""What the library is doing, in numbers: a snapshot for health pages and tests, and the same
figures exported through OpenTelemetry when ``opentelemetry-api`` is installed.

Counting on the hot path is one attribute increment; OpenTelemetry reads the counters only when
it collects (observable counters), so exporting adds nothing per request. Spans wrap only the
introspection calls. Nothing recorded here, in a span or a metric, carries a token.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ._exceptions import ClientCredentialsRejected

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - the optional 'otel' extra
    otel_metrics = None  # type: ignore[assignment]
    otel_trace = None  # type: ignore[assignment]

__all__ = ["IDP_OUTCOMES", "Metrics", "MetricsSnapshot"]

IDP_OUTCOMES = ("active", "inactive", "unavailable", "credentials_rejected")


@dataclass(frozen=True)
class MetricsSnapshot:
    """Counts since the instance was created; latencies in seconds."""

    cache_hits: int
    shared_hits: int
    negative_hits: int
    misses: int
    coalesced_waits: int
    stale_served: int
    circuit_rejections: int
    idp_calls: dict[str, int]
    idp_latency_count: int
    idp_latency_sum: float
    idp_latency_max: float
    circuit_state: Literal["closed", "open", "half-open"]
    cache_size: int
    negative_cache_size: int
    in_flight: int = 0
    """Validations running now (concurrent callers of one token share one), background
    introspections and JWKS fetches included."""
    slots_in_use: int = 0
    """Slots of ``max_concurrent_introspections`` held now."""
    jwt_verified: int = 0
    """JWT access tokens verified locally (``validation`` ``local`` or ``hybrid``)."""
    jwks_fetches: int = 0
    """Fetches of the issuer's JWKS (first use, unknown ``kid``, background refresh)."""
    background_introspections: int = 0
    """Hybrid mode: introspections started after a JWT was served (or for ``introspected``)."""
    confirmation_waits: int = 0
    """Hybrid mode: requests that waited for their token's confirming introspection (the
    token had served ``hybrid_unconfirmed_limit`` requests already)."""
    confirmations_requeued: int = 0
    """Hybrid mode: confirmations that found the concurrency cap full for a whole ``timeout``
    and queued again (never dropped)."""
    events_received: int = 0
    """ZITADEL events (Actions v2) that reached the receiver."""
    events_applied: int = 0
    """Events whose markers were applied (a refusal, a dropped verdict, a mapping)."""
    events_ignored: int = 0
    """Verified events that changed nothing: a type this library does not act on, or a
    terminated login session whose OIDC sessions it never heard of."""
    events_refused: dict[str, int] = field(default_factory=dict)
    """Calls refused, by reason: missing, malformed, stale, mismatch, jws, jws_unavailable,
    oversized, instance, replayed."""
    events_unshared: int = 0
    """Events applied in this process only: the shared tier did not take them (503)."""
    events_lag_count: int = 0
    events_lag_sum: float = 0.0
    events_lag_max: float = 0.0
    """Seconds from an event's ``created_at`` to its arrival here."""


@dataclass
class Metrics:
    cache_hits: int = 0
    shared_hits: int = 0
    negative_hits: int = 0
    misses: int = 0
    stale_served: int = 0
    circuit_rejections: int = 0
    jwt_verified: int = 0
    background_introspections: int = 0
    confirmation_waits: int = 0
    confirmations_requeued: int = 0
    idp_calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(IDP_OUTCOMES, 0))
    idp_latency_count: int = 0
    idp_latency_sum: float = 0.0
    idp_latency_max: float = 0.0
    events_received: int = 0
    events_applied: int = 0
    events_ignored: int = 0
    events_refused: dict[str, int] = field(default_factory=dict)
    events_unshared: int = 0
    events_lag_count: int = 0
    events_lag_sum: float = 0.0
    events_lag_max: float = 0.0

    coalesced_waits: Callable[[], int] = lambda: 0
    """Callers that waited for a validation already running (read from single flight)."""

    def __post_init__(self) -> None:
        self._tracer: Any = None
        self._latency: Any = None
        self._lag: Any = None

    def counts(self) -> dict[str, Any]:
        """The counters, copied, by their ``MetricsSnapshot`` names."""
        counts = {name: copy.copy(getattr(self, name)) for name in _COUNTERS}
        counts["coalesced_waits"] = self.coalesced_waits()
        return counts

    def observe_event_lag(self, seconds: float) -> None:
        """An event arrived ``seconds`` after ZITADEL wrote it."""
        self.events_lag_count += 1
        self.events_lag_sum += seconds
        self.events_lag_max = max(self.events_lag_max, seconds)
        if self._lag is not None:
            self._lag.record(seconds)

    def export(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        """Publish through OpenTelemetry, if its API is installed (no-op without an SDK)."""
        if otel_trace is None or otel_metrics is None:
            return
        self._tracer = otel_trace.get_tracer("fastapi_zitadel")
        meter = otel_metrics.get_meter("fastapi_zitadel")
        self._latency = meter.create_histogram(
            "fastapi_zitadel.idp.duration", unit="s", description="Introspection latency"
        )

        def lookups(_options: Any) -> Iterable[Any]:
            now = snapshot()
            for result, value in (
                ("hit", now.cache_hits),
                ("shared_hit", now.shared_hits),
                ("negative_hit", now.negative_hits),
                ("miss", now.misses),
                ("coalesced", now.coalesced_waits),
                ("stale", now.stale_served),
                ("circuit_rejected", now.circuit_rejections),
            ):
                yield otel_metrics.Observation(value, {"result": result})

        def calls(_options: Any) -> Iterable[Any]:
            for outcome, value in snapshot().idp_calls.items():
                yield otel_metrics.Observation(value, {"outcome": outcome})

        def events(_options: Any) -> Iterable[Any]:
            now = snapshot()
            for outcome in ("received", "applied", "ignored", "unshared"):
                value = getattr(now, f"events_{outcome}")
                yield otel_metrics.Observation(value, {"outcome": outcome})
            for reason, value in now.events_refused.items():
                yield otel_metrics.Observation(value, {"outcome": "refused", "reason": reason})

        for name, callback, description in (
            ("fastapi_zitadel.lookups", lookups, "Token lookups by result"),
            ("fastapi_zitadel.idp.calls", calls, "Introspections by outcome"),
            ("fastapi_zitadel.events", events, "ZITADEL events by outcome"),
        ):
            meter.create_observable_counter(name, callbacks=[callback], description=description)
        self._lag = meter.create_histogram(
            "fastapi_zitadel.events.lag",
            unit="s",
            description="From a ZITADEL event's created_at to its arrival",
        )

    @contextmanager
    def idp_call(self) -> Iterator[dict[str, str]]:
        """Time one introspection; the caller sets ``outcome`` in the yielded dict when the
        IdP answered, a rejection of our credentials is read off the exception."""
        record = {"outcome": "unavailable"}
        span = self._tracer.start_span("zitadel.introspect") if self._tracer else None
        started = time.perf_counter()
        try:
            yield record
        except ClientCredentialsRejected:
            record["outcome"] = "credentials_rejected"
            raise
        finally:
            elapsed = time.perf_counter() - started
            outcome = record["outcome"]
            self.idp_calls[outcome] = self.idp_calls.get(outcome, 0) + 1
            self.idp_latency_count += 1
            self.idp_latency_sum += elapsed
            self.idp_latency_max = max(self.idp_latency_max, elapsed)
            if span is not None:
                span.set_attribute("fastapi_zitadel.outcome", outcome)
                span.end()
            if self._latency is not None:
                self._latency.record(elapsed, {"outcome": outcome})


_COUNTERS = tuple(f.name for f in fields(Metrics) if f.name != "coalesced_waits")
