"""The FastAPI layer: the security dependency, the ``require_*`` dependencies, bearer extraction and
OpenAPI (the default instance, built on it, is the public ``defaults.py``). It hands tokens to the
pipeline and turns its errors into responses; nothing below imports from here."""
