"""The FastAPI layer: the security dependency, the ``require_*`` dependencies, the default
instance, bearer extraction and OpenAPI. It hands tokens to the pipeline and turns its errors
into responses; nothing below imports from here."""
