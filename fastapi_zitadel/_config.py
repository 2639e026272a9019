"""Configuration: one validated model, filled from keyword arguments or from ``ZITADEL_*``.

Everything is checked when the ``ZitadelIntrospection`` is built, so a typo fails the app at
start-up with the setting's name rather than every request with a 503. The model also holds
the credential rule (a key file, the key's JSON, or a client id with its secret: exactly one),
so that every way of configuring the library (keywords, ``from_env``, the CLI) obeys it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._credentials.key_file import KeyFileSource, ZitadelKeyFile, load_key_file
from ._exceptions import ConfigurationError, KeyFileError
from ._http.urls import check_url, redis_url_problem, shown, unprintable
from ._log import logger

__all__ = [
    "Issuer",
    "KeyFileSource",
    "MaxRetries",
    "Timeout",
    "Validation",
    "ZitadelConfig",
    "ZitadelSettings",
    "configuration_error",
    "merged_config",
    "unknown_variables",
]


Validation = Literal["introspection", "local", "hybrid"]
"""How tokens are verified: asking ZITADEL (RFC 7662), JWTs locally, or both."""


def _is_path(source: object) -> bool:
    return isinstance(source, os.PathLike) or (
        isinstance(source, str) and not source.lstrip().startswith("{")
    )


def _issuer_rule(value: str) -> str:
    if value.rstrip("/").endswith(_DISCOVERY_SUFFIX):
        raise ValueError(
            f"is the discovery document's URL, not the issuer; use "
            f"{shown(value.rstrip('/').removesuffix(_DISCOVERY_SUFFIX))}"
        )
    if value.endswith("/"):
        raise ValueError(
            f"must not end with '/': ZITADEL compares the issuer exactly; "
            f"use {shown(value.rstrip('/'))}"
        )
    return value


# The rules every client of ZITADEL shares: this configuration and the outbound clients'
# settings (``_outbound/settings.py``) are checked by the same types.
Issuer = Annotated[str, AfterValidator(_issuer_rule)]
"""ZITADEL's issuer: no trailing slash, not the discovery URL (the scheme is checked with
``allow_insecure_http``, by ``check_url``)."""
Timeout = Annotated[float, Field(gt=0, le=300)]
MaxRetries = Annotated[int, Field(ge=0, le=10)]
# The settings that are lists: comma-separated in ZITADEL_*, each item checked.
_LISTS = ("audience", "assertion_audience", "allowed_client_ids")


class ZitadelConfig(BaseModel):
    """Every setting of ``ZitadelIntrospection``; see the README's configuration table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: Issuer = Field(description="ZITADEL's issuer URL, e.g. https://acme.zitadel.cloud")
    validation: Validation = Field(
        default="introspection",
        description="How tokens are verified: `introspection` (ask ZITADEL, RFC 7662), `local` "
        "(JWT access tokens against the issuer's JWKS, no client credentials needed) or "
        "`hybrid` (JWTs locally at once, confirmed by introspection in the background)",
    )
    hybrid_unconfirmed_limit: int = Field(
        default=1,
        ge=1,
        le=1_000,
        description="`hybrid` only: requests per token served from its JWT before ZITADEL's "
        "introspection has confirmed it; further ones wait for the confirmation (within "
        "`timeout`). `1`: a revoked JWT passes one request at most; more lets a page's "
        "parallel requests skip the wait, and lets a revoked JWT pass that many",
    )
    key_file: Path | None = Field(default=None, description="Path of the JSON key file")
    # NoDecode: ZITADEL_KEY reaches _load_key as text, whose reading bounds its size and depth
    # (pydantic-settings' own json.loads would raise RecursionError on a hostile value).
    key: Annotated[ZitadelKeyFile | None, NoDecode] = Field(
        default=None, description="The JSON key file's content", repr=False
    )
    client_id: str | None = None
    client_secret: SecretStr | None = None
    audience: Annotated[tuple[str, ...], NoDecode] = ()
    allowed_client_ids: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Client ids (`client_id`/`azp`) a token must have been issued to "
        "(comma-separated); empty: any client of an accepted audience",
    )
    project_id: str | None = None
    introspection_endpoint: str | None = None
    cache_ttl: float = Field(default=60.0, ge=0, le=86_400)
    cache_max_size: int = Field(default=10_000, ge=1)
    negative_cache_ttl: float = Field(default=5.0, ge=0, le=3_600)
    negative_cache_max_size: int = Field(default=2_000, ge=1)
    stale_if_error: float = Field(default=0.0, ge=0, le=86_400)
    leeway: float = Field(default=5.0, ge=0, le=300)
    timeout: Timeout = 10.0
    max_retries: MaxRetries = 2
    max_concurrent_introspections: int = Field(default=50, ge=1, le=10_000)
    circuit_breaker_threshold: int = Field(default=5, ge=0, le=1_000)
    circuit_breaker_cooldown: float = Field(default=5.0, gt=0, le=300)
    assertion_lifetime: float = Field(default=600.0, ge=30, le=3_300)
    assertion_audience: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="The `aud` of our client assertions (comma-separated for several). Empty: "
        "the issuer, which ZITADEL requires; some servers accept only the token or "
        "introspection endpoint's URL (RFC 7523 §3 allows either)",
    )
    single_use_assertion: bool = False
    max_token_length: int = Field(default=4096, ge=16, le=1_048_576)
    redis_url: SecretStr | None = None
    discover_on_startup: bool = False
    allow_insecure_http: bool = False
    realm: str = Field(default="api", min_length=1, pattern=r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")
    scheme_name: str = Field(default="ZITADEL", min_length=1)
    scheme_description: str | None = None
    swagger_client_id: str | None = None
    websocket_query_token: bool = False
    resource: str | None = Field(
        default=None,
        description="This API's resource identifier URL (RFC 9728): serves its protected "
        "resource metadata and names it in every 401 challenge",
    )
    resource_name: str | None = None
    resource_documentation: str | None = None
    unknown_user_status: Literal[401, 403] = 403
    events_signing_key: SecretStr | None = Field(
        default=None,
        description="The signing key of ZITADEL's Actions v2 target (several comma-separated, "
        "during a rotation): serves the event receiver, whose events revoke cached verdicts "
        "and JWTs",
    )
    events_path: str = Field(
        default="/zitadel/events",
        pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$",
        description="Where `install()` serves the event receiver (POST)",
    )
    events_max_age: float = Field(
        default=300.0,
        ge=1,
        le=3_600,
        description="How far an event's signature time may be from now, in seconds",
    )
    events_max_body: int = Field(
        default=65_536, ge=1_024, le=10_485_760, description="The largest event body, in bytes"
    )

    @model_validator(mode="before")
    @classmethod
    def _sort_key_sources(cls, data: Any) -> Any:
        # ``key_file=`` also takes the key itself (JSON text, a mapping, a loaded key file), as
        # the README shows; it is kept as ``key`` so that a path is always a path.
        if isinstance(data, Mapping) and "key_file" in data and not _is_path(data["key_file"]):
            if data["key_file"] is not None:
                if data.get("key") is not None:
                    raise ValueError(_ONE_KEY)
                data = {**data, "key": data["key_file"]}
            data = {name: value for name, value in data.items() if name != "key_file"}
        return data

    @field_validator("key_file", mode="before")
    @classmethod
    def _path_not_key(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():  # ZITADEL_KEY_FILE= ; Path("") is "."
            raise ValueError("is empty: set it to the path of the JSON key file, or unset it")
        # Never let key material reach a "file not found: <path>" message.
        if isinstance(value, str) and ("PRIVATE KEY" in value or "\n" in value):
            raise ValueError(
                "holds key material, not a path: put the key file's JSON in key (ZITADEL_KEY)"
            )
        if isinstance(value, (str, os.PathLike)) and _is_path(value):
            return Path(value).expanduser()  # "~/keys/api.json", as a shell would read it
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _load_key(cls, value: Any) -> Any:
        # Loaded here, once: a broken key fails construction, naming the field it lacks.
        if value is None or isinstance(value, ZitadelKeyFile):
            return value
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str) and _is_path(value):
            raise KeyFileError(
                "(key setting)", "expected the key file's JSON text (it starts with '{')"
            )
        if isinstance(value, (str, Mapping)):
            return load_key_file(value)
        raise ValueError("must be the key file's JSON text or a mapping")

    @field_validator(*_LISTS, mode="before")
    @classmethod
    def _split_audience(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator(
        "resource_documentation", "client_id", "project_id", "swagger_client_id", *_LISTS
    )
    @classmethod
    def _printable(cls, value: str | tuple[str, ...] | None) -> Any:
        items = (value,) if isinstance(value, str) else value or ()
        for item in items:
            problem = unprintable(item)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        problem = None if value is None else redis_url_problem(value.get_secret_value())
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> ZitadelConfig:
        # Here rather than in field validators: both depend on allow_insecure_http.
        for name in ("issuer", "introspection_endpoint", "resource"):
            url = getattr(self, name)
            try:
                if url is not None:
                    check_url(url, allow_insecure_http=self.allow_insecure_http)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if self.resource is not None and "#" in self.resource:
            raise ValueError("resource: must not contain a fragment (RFC 9728 §1.2)")
        if self.resource is None and (self.resource_name or self.resource_documentation):
            raise ValueError(
                "resource_name and resource_documentation need resource (ZITADEL_RESOURCE)"
            )
        # Exactly one client credential: a key (file or JSON), or a client id with secret.
        # validation="local" never calls ZITADEL with our credentials, so there none is needed
        # (one given is still checked, and must still be just one).
        sources = [name for name in ("key_file", "key") if getattr(self, name) is not None]
        has_secret = self.client_id is not None or self.client_secret is not None
        if len(sources) > 1:
            raise ValueError(_ONE_KEY)
        if sources and has_secret:
            raise ValueError(
                f"set either {sources[0]} (ZITADEL_{sources[0].upper()}) or client_id with "
                "client_secret (ZITADEL_CLIENT_ID, ZITADEL_CLIENT_SECRET), not both"
            )
        if not sources and not has_secret and self.validation != "local":
            raise ValueError(
                "no client credentials: set key_file (ZITADEL_KEY_FILE) to the API "
                "application's JSON key, or client_id and client_secret (ZITADEL_CLIENT_ID, "
                "ZITADEL_CLIENT_SECRET)"
            )
        if has_secret and (not self.client_id or self.client_secret is None):
            raise ValueError(
                "client_id and client_secret (ZITADEL_CLIENT_ID, ZITADEL_CLIENT_SECRET) must be "
                "set together"
            )
        # Local verification needs an audience, since nobody else checks it.
        if self.validation != "introspection" and not self.audience:
            raise ValueError(
                f"validation={self.validation!r} needs audience (ZITADEL_AUDIENCE): a JWT "
                "verified locally is checked by nobody else for being meant for this API; set "
                "it to the project's resource id (or the API application's client id)"
            )
        if (
            self.validation == "local"
            and self.redis_url is not None
            and self.events_signing_key is None
        ):
            raise ValueError(
                "validation='local' has no use for redis_url (ZITADEL_REDIS_URL): each replica "
                "verifies JWTs itself, faster than a Redis round trip, and a locally verified "
                "JWT cannot be revoked; unset it, use validation='hybrid', or set "
                "events_signing_key (ZITADEL's events then reach every replica through it)"
            )
        self.events_keys()  # a clear error now, rather than 401s later
        return self

    def events_keys(self) -> tuple[bytes, ...]:
        """The event signing keys (``events_signing_key``, comma-separated), or none."""
        if self.events_signing_key is None:
            return ()
        keys = tuple(
            key.strip().encode("utf-8")
            for key in self.events_signing_key.get_secret_value().split(",")
        )
        if not all(keys):
            raise ValueError(
                "events_signing_key: an empty key; give the target's signingKey, several "
                "separated by commas during a rotation (ZITADEL_EVENTS_SIGNING_KEY)"
            )
        return keys

    @property
    def has_credentials(self) -> bool:
        """Whether a client credential (a key or a client id with its secret) is set."""
        return self.key_source() is not None or self.client_id is not None

    def key_source(self) -> KeyFileSource | None:
        """The API application's key (a loaded key or a path), or ``None`` with a secret."""
        return self.key if self.key is not None else self.key_file


_ONE_KEY = "set only one of key_file and key (ZITADEL_KEY_FILE, ZITADEL_KEY)"
_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


class ZitadelSettings(ZitadelConfig, BaseSettings):
    """``ZitadelConfig`` read from ``ZITADEL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ZITADEL_", extra="ignore", frozen=True)

    # Which settings were given as keywords (the rest came from ZITADEL_*): errors name each
    # as the user set it.
    _keywords: frozenset[str] = PrivateAttr(default=frozenset())

    def __init__(self, **keywords: Any) -> None:
        misspelt, ignored = unknown_variables(os.environ)
        if misspelt:
            raise ConfigurationError(
                "invalid fastapi-zitadel configuration: " + "; ".join(misspelt)
            )
        if ignored:
            logger.warning(
                "ignoring %s: not fastapi-zitadel settings (ZITADEL's own server reads "
                "ZITADEL_* variables too; the settings are listed in docs/configuration.md)",
                ", ".join(ignored),
            )
        super().__init__(**keywords)
        self._keywords = frozenset(keywords)

    @property
    def keywords(self) -> frozenset[str]:
        """The settings given as keyword arguments rather than read from ``ZITADEL_*``."""
        return self._keywords

    @model_validator(mode="before")
    @classmethod
    def _key_file_is_a_path(cls, data: Any) -> Any:
        # An environment variable is text: JSON in the path variable is a mix-up, said as such
        # (and never echoed: it holds the private key). Runs before ZitadelConfig's
        # _sort_key_sources (pydantic runs the "before" validators last defined first).
        source = data.get("key_file") if isinstance(data, Mapping) else None
        if isinstance(source, str) and not _is_path(source):
            raise ValueError(
                "ZITADEL_KEY_FILE holds a path; put the key file's JSON in ZITADEL_KEY"
            )
        return data


# How close (difflib's ratio) an unknown variable's name must be to a setting's to be taken for
# a misspelling of it.
_MISSPELT = 0.75
# Variables of ours that are no setting: the command line reads them (`events setup`'s personal
# access token), so an app sharing the environment neither fails nor warns about them.
_COMMAND_LINE_ONLY = frozenset({"PAT"})


def unknown_variables(environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The ``ZITADEL_*`` variables that are no setting: a message for each one that looks
    like a misspelt setting, and the names of the others.

    A misspelling is never ignored: the singular of ``ZITADEL_ALLOWED_CLIENT_IDS`` would
    otherwise accept every client, ``ZITADEL_AUDIENCE`` with an S switch the audience check
    off. Names far from every setting are only logged: ZITADEL's own server reads ``ZITADEL_*`` too
    (``ZITADEL_MASTERKEY``, ``ZITADEL_DATABASE_POSTGRES_HOST``...), and an environment shared
    with it must keep working.
    """
    known = {name.upper() for name in ZitadelConfig.model_fields}
    problems: list[str] = []
    others: list[str] = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith("ZITADEL_") or upper[8:] in known | _COMMAND_LINE_ONLY:
            continue
        near = difflib.get_close_matches(upper[8:], known, n=1, cutoff=_MISSPELT)
        if near:
            problems.append(
                f"{variable} is not a setting: did you mean ZITADEL_{near[0]}? "
                "(rename it; an unknown variable is never ignored silently)"
            )
        else:
            others.append(variable)
    return problems, others


def configuration_error(
    exc: ValidationError, *, env: bool | Collection[str], keywords: Collection[str] = ()
) -> ConfigurationError:
    """One error naming each bad setting as the user set it: the keyword, or the environment
    variable for settings read from there (``env``: all of them, or those named).

    A broken key file keeps its own type (``KeyFileError``), with its source and field.
    """
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, KeyFileError):
            return cause
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        prefix, _, rest = message.partition(": ")
        if not field and prefix in ZitadelConfig.model_fields:  # "issuer: ..." from a check
            field, message = prefix, rest
        if field and field not in keywords and (env is True or (env is not False and field in env)):
            field = f"ZITADEL_{field.upper()}"
        problems.append(f"{field}: {message}" if field else message)
    return ConfigurationError("invalid fastapi-zitadel configuration: " + "; ".join(problems))


def merged_config(config: ZitadelConfig | None, explicit: Mapping[str, Any]) -> ZitadelConfig:
    """``config`` with the ``explicit`` settings on top, validated again as a whole.

    In an error, settings that came from the environment (a ``ZitadelSettings``) are named
    as their variables, the others as keywords.
    """
    given: set[str] = set() if config is None else config.model_fields_set
    values = {name: getattr(config, name) for name in given}
    values.update(explicit)
    from_env = given - config.keywords if isinstance(config, ZitadelSettings) else set()
    try:
        return ZitadelConfig.model_validate(values)
    except ValidationError as exc:
        raise configuration_error(exc, env=from_env, keywords=explicit.keys()) from None
