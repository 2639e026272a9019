"""Staying up when the IdP is not: circuit breaker, concurrency cap, single flight, and the
per-event-loop holder they all keep their loop-bound state in."""
