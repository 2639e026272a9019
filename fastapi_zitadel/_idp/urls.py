"""Which URLs we send tokens and credentials to: https, or plain http only on loopback.

A token or client assertion sent over plain http to another host can be read on the way;
loopback is allowed for local development and the stand-in.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["check_url", "is_loopback_host", "shown"]


def shown(value: str) -> str:
    """A setting's value as an error message may show it: never key material, never long."""
    if (
        "PRIVATE KEY" in value
        or "\n" in value
        or len(value) > 200
        or value.lstrip().startswith("{")
    ):
        return f"a value of {len(value)} characters (not shown: it may hold a secret)"
    return repr(value)


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure_http: bool) -> str:
    """An absolute http(s) URL; plain http only for loopback hosts unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(
            f"must be an absolute URL (https://, or http:// for a loopback host), got "
            f"{shown(url)}{_suggestion(url)}"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"{shown(url)} uses plain http for a non-loopback host: tokens would cross the network "
            "in clear text; use https, or set allow_insecure_http=True "
            "(ZITADEL_ALLOW_INSECURE_HTTP=true) for a trusted network"
        )
    return url


def _suggestion(url: str) -> str:
    """For a URL without a scheme, the one meant: http for loopback (allowed), else https."""
    if "://" in url or not url.strip() or len(url) > 200:
        return ""
    host = urlsplit("//" + url).hostname or ""
    scheme = "http" if is_loopback_host(host) else "https"
    return f"; did you mean {shown(f'{scheme}://{url}')}?"
