"""Staying up when the IdP is not: the circuit breaker, the concurrency cap and an IdP call's
own budget."""
