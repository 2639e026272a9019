"""Calling other APIs with ZITADEL tokens: a service user's own, or one exchanged."""
