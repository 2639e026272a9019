"""ZITADEL's protocol as we speak it to the identity provider: discovery, the issuer's keys
(JWKS) and the introspection call."""
