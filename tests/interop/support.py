"""What the interop fixtures and tests share: the server's clients, key files, server calls."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent

# The API that the tokens are for: a resource indicator (RFC 8707), which oidc-provider puts
# into the token's ``aud`` as a plain string (ZITADEL sends an array).
RESOURCE = "urn:fastapi-zitadel:items-api"
# The same API's resource whose access tokens oidc-provider issues as RFC 9068 JWTs
# (`typ: at+jwt`, RS256, signed with its key published at `jwks_uri`).
JWT_RESOURCE = "urn:fastapi-zitadel:items-api-jwt"
RESOURCE_SCOPES = ("items:read", "items:write")

# The API's introspecting client with a key, ZITADEL style: ids are strings, the client id
# contains '@'.
KEY_ID = "301122334455667788"
APP_ID = "298374650"
JWT_CLIENT_ID = "items-api@shop"

# The same API's introspecting client with a secret. Id and secret hold characters that
# RFC 6749 §2.3.1 requires to be form-url-encoded inside HTTP Basic (a raw ':' in the secret
# would be ambiguous, '+' and '%' would decode wrongly); oidc-provider decodes them as the RFC
# says.
BASIC_CLIENT_ID = "items-api-basic@shop"
BASIC_CLIENT_SECRET = "s3cret: with+plus%percent/slash&amp=equals?"

# Machine-to-machine callers that get real access tokens with the client credentials grant.
ADMIN_CALLER = "m2m-admin"  # its tokens carry a ZITADEL-style project role claim
PLAIN_CALLER = "m2m-plain"  # no role claim
SHORT_CALLER = "m2m-short"  # its tokens live SHORT_TTL seconds
CALLER_SECRET = "caller-secret-0123456789"
SHORT_TTL = 3
ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
ADMIN_ROLES = {"admin": {"org1": "acme.localhost"}}


def server_config(port: int, public_jwk: dict[str, Any]) -> dict[str, Any]:
    """The JSON configuration ``server.mjs`` takes as its argument."""
    return {
        "port": port,
        "resource": RESOURCE,
        "jwt_resource": JWT_RESOURCE,
        "resource_scopes": list(RESOURCE_SCOPES),
        "introspectors": [
            {"client_id": JWT_CLIENT_ID, "jwk": public_jwk},
            {"client_id": BASIC_CLIENT_ID, "client_secret": BASIC_CLIENT_SECRET},
        ],
        "callers": [
            {
                "client_id": ADMIN_CALLER,
                "client_secret": CALLER_SECRET,
                "extra_claims": {ROLES_CLAIM: ADMIN_ROLES},
            },
            {"client_id": PLAIN_CALLER, "client_secret": CALLER_SECRET},
            {"client_id": SHORT_CALLER, "client_secret": CALLER_SECRET, "ttl": SHORT_TTL},
        ],
    }


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key_file(path: Path, key: rsa.RSAPrivateKey) -> Path:
    """Write ``key`` as ZITADEL's downloaded application key file (PEM in PKCS#1)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    document = {
        "type": "application",
        "keyId": KEY_ID,
        "key": pem,
        "appId": APP_ID,
        "clientId": JWT_CLIENT_ID,
    }
    path.write_text(json.dumps(document))
    return path


@dataclass
class OidcServer:
    """A running oidc-provider and the calls a test makes to it directly."""

    issuer: str
    version: str
    metadata: dict[str, Any]
    stderr_path: Path
    http: httpx.Client = field(repr=False)

    def token(
        self,
        caller: str,
        scopes: tuple[str, ...] = RESOURCE_SCOPES,
        *,
        resource: str | None = None,
    ) -> str:
        """A fresh access token for ``caller`` (client credentials grant); ``resource=``
        names the resource indicator (RFC 8707; ``JWT_RESOURCE``: a JWT access token)."""
        form = {"grant_type": "client_credentials", "scope": " ".join(scopes)}
        if resource is not None:
            form["resource"] = resource
        response = self.http.post(
            self.metadata["token_endpoint"], data=form, auth=(caller, CALLER_SECRET)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer", body
        return str(body["access_token"])

    def revoke(self, caller: str, token: str) -> None:
        """Revoke ``token`` at the server (RFC 7009), as the client it was issued to."""
        response = self.http.post(
            self.metadata["revocation_endpoint"],
            data={"token": token, "token_type_hint": "access_token"},
            auth=(caller, CALLER_SECRET),
        )
        assert response.status_code == 200, response.text

    def stderr(self) -> str:
        """What the server logged so far (``server.mjs`` logs every endpoint error there)."""
        return self.stderr_path.read_text(errors="replace")
