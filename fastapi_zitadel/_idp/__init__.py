"""Talking to the identity provider: HTTP, discovery, key files, client authentication and
the introspection call with its retries."""
