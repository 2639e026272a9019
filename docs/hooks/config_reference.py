"""MkDocs hook: the configuration reference, generated from ``ZitadelConfig`` at build time.

A page that contains the placeholder below gets it replaced by a table with one row per field
of the settings model: keyword, environment variable, type, default, constraints and
description. Descriptions come from ``Field(description=...)`` where the model has one, and
from ``DESCRIPTIONS`` here otherwise; a field with neither is reported as a warning, which fails
``mkdocs build --strict``.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic.fields import FieldInfo

from fastapi_zitadel.config import ZitadelConfig, ZitadelSettings

PLACEHOLDER = "<!-- fastapi-zitadel:config-reference -->"

log = logging.getLogger("mkdocs.hooks.config_reference")

# For the fields that have no ``Field(description=...)`` in ``_config.py``.
DESCRIPTIONS: dict[str, str] = {
    "client_id": "Client id for `client_secret_basic` authentication, with `client_secret`, "
    "instead of a key file",
    "client_secret": "Client secret for `client_secret_basic`, with `client_id`",
    "audience": "Accepted audiences; an active token must carry at least one of them. "
    "Typically the project's resource id. Empty: no local audience check (ZITADEL still "
    "checks that the token is meant for the caller's project); required with `validation` "
    "`local` or `hybrid`",
    "project_id": "The project's resource id: roles are read from "
    "`urn:zitadel:iam:org:project:{id}:roles` instead of the generic "
    "`urn:zitadel:iam:org:project:roles` claim",
    "introspection_endpoint": "The introspection URL; when set, OpenID discovery is skipped",
    "cache_ttl": "Seconds an active result is cached, never past the token's `exp`; also the "
    "longest a revoked token can still pass. `0` disables caching",
    "cache_max_size": "Active results kept in the in-process cache",
    "negative_cache_ttl": "Seconds an inactive answer is remembered (short on purpose: ZITADEL "
    "also answers inactive on internal errors). `0` disables",
    "negative_cache_max_size": "Inactive answers kept; separate from active results, so "
    "garbage tokens cannot evict real users",
    "stale_if_error": "Seconds a cached active result may still be served past `cache_ttl` "
    "while the IdP is unavailable (never past `exp`, never after an inactive answer). "
    "`0` disables",
    "leeway": "Seconds of clock skew allowed when checking `exp` and `nbf`",
    "timeout": "Deadline in seconds for authenticating one request: discovery, queueing and "
    "retries included. Past it: 503",
    "max_retries": "Retries after connection errors, timeouts, 5xx and 429 (jittered backoff, "
    "a fresh assertion each time), within `timeout`",
    "max_concurrent_introspections": "Introspections in flight at once per instance; more "
    "wait, within `timeout`, then 503",
    "circuit_breaker_threshold": "Consecutive IdP failures that open the circuit breaker. "
    "`0` disables it",
    "circuit_breaker_cooldown": "Seconds new introspections fail fast while the circuit is "
    "open; then one probe decides",
    "assertion_lifetime": "Lifetime in seconds of the signed client assertion; it is re-signed "
    "at half-life",
    "single_use_assertion": "Sign a fresh client assertion for every introspection. Switched "
    "on automatically when the server rejects a reused one",
    "max_token_length": "Longer bearer tokens are rejected (401) without a network call",
    "redis_url": "A shared cache tier on Redis for many workers and replicas "
    "(`redis://host:6379/0`); needs the `redis` extra",
    "discover_on_startup": "Fetch the discovery document when the app starts (in the "
    "lifespan), so a wrong issuer fails the start instead of the first request",
    "allow_insecure_http": "Allow `http://` issuer and endpoint URLs for non-loopback hosts "
    "(loopback hosts are always allowed)",
    "realm": "The `realm` of `WWW-Authenticate` challenges",
    "scheme_name": "Name of the security scheme in OpenAPI",
    "scheme_description": "Description of the security scheme in OpenAPI; by default it names "
    "the issuer",
    "swagger_client_id": "Client id of a ZITADEL web application (PKCE) for the Authorize "
    "button of Swagger UI; without it, Swagger UI takes a pasted token",
    "resource_name": "RFC 9728 `resource_name`: a human-readable name of this API in its "
    "protected resource metadata (needs `resource`)",
    "resource_documentation": "RFC 9728 `resource_documentation`: a URL of this API's "
    "documentation for developers (needs `resource`)",
    "unknown_user_status": "The status when `principal_loader` returns `None` for a valid token: "
    "`403` (`insufficient_scope`, default) or `401` (`invalid_token`)",
    "websocket_query_token": "Also accept `?access_token=` on WebSocket routes (never on HTTP "
    "routes). Off by default because servers log query strings",
}

# Rules that live in validators rather than in field constraints.
EXTRA_CONSTRAINTS: dict[str, str] = {
    "issuer": "absolute `https://` URL (`http://` only for loopback hosts, unless "
    "`allow_insecure_http`); no trailing `/`",
    "introspection_endpoint": "absolute `https://` URL (`http://` only for loopback hosts, "
    "unless `allow_insecure_http`)",
    "key_file": "one of `key_file`, `key`, or `client_id` with `client_secret`",
    "key": "one of `key_file`, `key`, or `client_id` with `client_secret`",
    "client_id": "together with `client_secret`",
    "client_secret": "together with `client_id`",
    "audience": "comma-separated in the environment",
    "redis_url": "the `redis` extra: `pip install '.[redis]'` in a clone, or "
    "`pip install 'fastapi_zitadel-0.1.0-py3-none-any.whl[redis]'` with a wheel",
    "events_signing_key": "comma-separated for several; never shown",
}

_BOUNDS = (
    ("gt", ">"),
    ("ge", "≥"),
    ("lt", "<"),
    ("le", "≤"),
    ("min_length", "length ≥"),
    ("max_length", "length ≤"),
)


def type_name(annotation: Any) -> str:
    """``float``, ``str | None``, ``tuple[str, ...]``: the annotation as a reader writes it."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        shown = ", ".join("..." if arg is Ellipsis else type_name(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{shown}]"
    return str(getattr(annotation, "__name__", annotation))


def type_cell(annotation: Any) -> str:
    """The type for the table: ``SecretStr`` or none (a ``|`` would split the table cell)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        shown = [f"`{type_name(arg)}`" for arg in args if arg is not type(None)]
        optional = " or none" if type(None) in args else ""
        return " or ".join(shown) + optional
    return f"`{type_name(annotation)}`"


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == ():
        return "none"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def constraints_text(name: str, field: FieldInfo) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for attribute, symbol in _BOUNDS:
            value = getattr(meta, attribute, None)
            if value is not None:
                parts.append(f"{symbol} {_number(value)}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            parts.append(f"matches `{pattern}`")
    if name in EXTRA_CONSTRAINTS:
        parts.append(EXTRA_CONSTRAINTS[name])
    return ", ".join(parts) or "—"


def description_text(name: str, field: FieldInfo) -> str:
    if field.description:
        return field.description
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    log.warning("configuration reference: no description for setting %r", name)
    return "(not yet described)"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def environment_variable(name: str) -> str:
    prefix = str(ZitadelSettings.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def rows() -> Iterable[tuple[str, ...]]:
    for name, field in ZitadelConfig.model_fields.items():
        yield (
            f"`{name}`",
            f"`{environment_variable(name)}`",
            type_cell(field.annotation),
            default_text(field),
            constraints_text(name, field),
            description_text(name, field),
        )


def render_table() -> str:
    header = ("Keyword", "Environment", "Type", "Default", "Constraints", "Description")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows()]
    return "\n".join(lines) + "\n"


def on_page_markdown(markdown: str, **_kwargs: Any) -> str:
    if PLACEHOLDER not in markdown:
        return markdown
    return markdown.replace(PLACEHOLDER, render_table())
