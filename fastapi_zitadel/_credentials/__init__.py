"""Our own credentials towards ZITADEL: its JSON key files, and client authentication
(`private_key_jwt`, `client_secret_basic`)."""
