"""The settings of the outbound clients (``ServiceAccountAuth``, ``TokenExchange``), checked once.

By the rules of the main configuration: the issuer, ``timeout`` and ``max_retries`` are
``ZitadelConfig``'s types (``_config.Issuer``...), the URL check is ``check_url``, and the
credential rule is the configuration's: a key, or a client id with its secret, never both. The
key is loaded here too, of the kind the client takes (``require_key_type``). Each client names
itself and the credential it needs in its messages.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fastapi_zitadel._config import Issuer, MaxRetries, Timeout
from fastapi_zitadel._credentials.key_file import (
    ZitadelKeyFile,
    load_key_file,
    require_key_type,
    source_label,
)
from fastapi_zitadel._exceptions import ConfigurationError
from fastapi_zitadel._http.urls import check_url

__all__ = ["OutboundSettings", "outbound_settings"]


class OutboundSettings(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    issuer: Issuer
    timeout: Timeout
    max_retries: MaxRetries
    allow_insecure_http: bool
    # Never in repr: a key file given as JSON text or a mapping holds the private key.
    key_file: Any = Field(default=None, repr=False)  # a KeyFileSource, loaded into ``key``
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    key: ZitadelKeyFile | None = None


_NEEDS = {"serviceaccount": "the service user's key", "application": "the application's key"}


def outbound_settings(
    owner: str, key_type: Literal["application", "serviceaccount"], **fields: Any
) -> OutboundSettings:
    """The checked settings (``fields``: ``OutboundSettings``'s) of ``owner``, with its key of
    ``key_type`` loaded; ``ConfigurationError`` naming the setting otherwise."""
    try:
        settings = OutboundSettings.model_validate(fields)
        check_url(settings.issuer, allow_insecure_http=settings.allow_insecure_http)
    except ValidationError as exc:
        raise _error(exc) from None
    except ValueError as exc:  # check_url's
        raise ConfigurationError(f"issuer: {exc}") from None
    key_file = settings.key_file
    if key_file is None:
        if settings.client_id and settings.client_secret:
            return settings
        raise ConfigurationError(
            f"{owner} needs {_NEEDS[key_type]} (key_file=...) or its client id and secret "
            "(client_id=..., client_secret=...)"
        )
    if settings.client_id is not None or settings.client_secret is not None:
        raise ConfigurationError(
            f"{owner} takes key_file or client_id with client_secret, not both"
        )
    loaded = load_key_file(key_file)
    key = require_key_type(loaded, key_type, source=source_label(key_file), where=owner)
    return settings.model_copy(update={"key": key})


def _error(exc: ValidationError) -> ConfigurationError:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message.replace("Input should be", "must be")
        problems.append(f"{field} {message}" if field else message)
    return ConfigurationError("; ".join(problems))
