"""The example app: a FastAPI API protected by fastapi-zitadel (see ``__main__``)."""
