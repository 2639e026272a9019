"""ZITADEL's events (Actions v2): verified, parsed, turned into revocation markers."""
