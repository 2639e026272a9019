"""Which URLs we send tokens and credentials to: https, or plain http only on loopback; and
what makes a URL setting unusable (whitespace, control characters, a malformed Redis URL).

A token or client assertion sent over plain http to another host can be read on the way;
loopback is allowed for local development and the stand-in.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import httpx

__all__ = ["check_url", "is_loopback_host", "redis_url_problem", "shown", "unprintable"]

_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "a line break", "\r": "a carriage return", " ": "a space", "\t": "a tab"}


def shown(value: str) -> str:
    """A setting's value as an error message may show it: never key material, never long."""
    secret = "PRIVATE KEY" in value or "\n" in value or value.lstrip().startswith("{")
    if secret or len(value) > 200:
        return f"a value of {len(value)} characters (not shown: it may hold a secret)"
    return repr(value)


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def unprintable(value: str) -> str | None:
    """What is wrong with a URL that holds whitespace or a control character, else ``None``.
    The usual cause is invisible: a trailing newline in a mounted secret file, a CRLF ``.env``,
    a space pasted along. urllib would take most of it into the host or the path, and every
    request would then fail far from the setting that caused it."""
    found = _UNPRINTABLE.search(value)
    if found is None:
        return None
    char = found.group()
    what = _NAMED.get(char, f"the control character U+{ord(char):04X}")
    trailing = _UNPRINTABLE.sub("", value[found.start() :]) == ""
    where = "at the end" if trailing else f"at character {found.start() + 1}"
    return (
        f"contains {what} {where}: remove it (a mounted secret file often ends with a line "
        "break, a .env file written on Windows with a carriage return)"
    )


def check_url(url: str, *, allow_insecure_http: bool) -> str:
    """An absolute http(s) URL; plain http only for loopback hosts unless allowed."""
    problem = unprintable(url)
    if problem is not None:
        raise ValueError(problem)
    try:
        httpx.URL(url)  # what every request to it will build: refused here, not per request
    except httpx.InvalidURL as exc:
        raise ValueError(f"is not a usable URL ({str(exc)[:80]})") from None
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ValueError("is not a usable URL (its port is not a number from 1 to 65535)") from None
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


def redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, or ``None``; never showing it (it may hold a password).
    Checked at construction so that a typo fails the app at start-up: the shared tier would
    otherwise fail on first use, log once, and leave every replica on its own cache."""
    problem = unprintable(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        return (
            "must be redis://[user:password@]host[:port][/db], rediss://... (TLS) or "
            "unix:///path/to/redis.sock (the value is not shown: it may hold a password)"
        )
    if parts.scheme == "unix":
        return None if parts.path else "unix:// needs the socket's path: unix:///path/to.sock"
    if not parts.hostname:
        return f"{parts.scheme}:// needs a host: {parts.scheme}://host:6379/0"
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:
        return "the port must be a number from 1 to 65535"
    database = parts.path.lstrip("/")
    if database and not database.isdigit():
        return "the path is the database number (redis://host:6379/0), not a name"
    return None
