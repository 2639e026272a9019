"""Benchmarks for fastapi-zitadel: ``python3 bench/run.py`` (see BENCHMARKS.md)."""
