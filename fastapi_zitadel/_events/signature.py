"""The ``ZITADEL-Signature`` header of an Actions v2 target call, checked before anything else.

ZITADEL signs ``"<t>." + <raw body>`` with HMAC-SHA256 keyed with the target's signing key
and sends ``ZITADEL-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]``. Any ``v1`` matching
any of our keys (several during a rotation) counts; ``t`` must be within ``max_age`` of now,
in either direction, so a captured call cannot be replayed later. Comparisons are constant
time. Nothing here ever shows a key, a signature or the body in an error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["HEADER", "SignatureRefused", "verify_signature"]

HEADER = "zitadel-signature"
_MAX_HEADER = 4096
_MAX_SIGNATURES = 16
_HEX_LENGTH = 64


class SignatureRefused(Exception):
    """The call is not from ZITADEL as far as we can tell; ``reason`` is a metric label."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def verify_signature(
    header: str | None,
    body: bytes,
    keys: Sequence[bytes],
    *,
    now: float,
    max_age: float,
) -> None:
    """Return if ``header`` signs ``body`` with one of ``keys`` within ``max_age`` of ``now``;
    raise ``SignatureRefused`` (reason: missing, malformed, stale, mismatch) otherwise."""
    if header is None or not header.strip():
        raise SignatureRefused("missing", "no ZITADEL-Signature header")
    if len(header) > _MAX_HEADER:
        raise SignatureRefused("malformed", "the ZITADEL-Signature header is too long")
    timestamp: str | None = None
    signatures: list[bytes] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureRefused("malformed", "the ZITADEL-Signature header is malformed")
        if name == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureRefused("malformed", "the signature's timestamp is malformed")
            timestamp = value
        elif name == "v1":
            if len(value) != _HEX_LENGTH or len(signatures) >= _MAX_SIGNATURES:
                raise SignatureRefused("malformed", "a v1 signature is malformed")
            try:
                signatures.append(bytes.fromhex(value))
            except ValueError:
                raise SignatureRefused("malformed", "a v1 signature is not hex") from None
        # other schemes (a future v2=...) are ignored, as ZITADEL's own validator does
    if timestamp is None or not signatures or len(timestamp) > 12:
        raise SignatureRefused("malformed", "the ZITADEL-Signature header lacks t= or v1=")
    if abs(now - int(timestamp)) > max_age:
        raise SignatureRefused(
            "stale", f"the signature's timestamp is more than {max_age:g} s from now"
        )
    signed = timestamp.encode("ascii") + b"." + body
    matched = False
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for signature in signatures:  # every comparison runs: no early exit to time
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureRefused("mismatch", "no signature matches a configured signing key")
