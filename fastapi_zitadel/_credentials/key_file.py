"""ZITADEL's downloaded JSON key files, loaded once and checked field by field.

A broken key file is the most common set-up mistake, so every failure names the source and
the field. No message ever includes the PEM or any part of it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field

from fastapi_zitadel._exceptions import KeyFileError, WrongKeyTypeError

__all__ = [
    "MIN_RSA_BITS",
    "KeyFileSource",
    "ZitadelKeyFile",
    "load_key_file",
    "require_key_type",
    "source_label",
]

MIN_RSA_BITS = 2048
# A ZITADEL key file is about 2 KiB (a 4096-bit key about 3.5): anything far larger is not one,
# and /dev/zero or a FIFO given as the path must not hang start-up or exhaust memory.
_MAX_KEY_FILE_BYTES = 64 * 1024
_TOO_LARGE = f"larger than {_MAX_KEY_FILE_BYTES // 1024} KiB: not a key file"

KeyFileSource = Union[str, "os.PathLike[str]", Mapping[str, Any], "ZitadelKeyFile"]
"""A path, the JSON text itself, an already parsed mapping, or a loaded key file."""


class ZitadelKeyFile(BaseModel):
    """A loaded key file: the ids ZITADEL needs in a client assertion and the private key.
    ``type`` is ``"application"`` for an API application's key (``clientId`` signs) and
    ``"serviceaccount"`` for a service user's key (``userId`` signs)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    type: Literal["application", "serviceaccount"]
    key_id: str
    client_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    private_key: rsa.RSAPrivateKey = Field(repr=False, exclude=True)

    @property
    def subject(self) -> str:
        """The id that goes into a client assertion's ``iss`` and ``sub``."""
        subject = self.client_id if self.type == "application" else self.user_id
        assert subject is not None  # guaranteed by load_key_file
        return subject


_REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "application": ("keyId", "key", "clientId", "appId"),
    "serviceaccount": ("keyId", "key", "userId"),
}


def load_key_file(source: KeyFileSource) -> ZitadelKeyFile:
    """Load a ZITADEL key file from a path, a JSON string or a mapping. A ``str`` whose first
    non-blank character is ``{`` is taken as JSON text (the ``ZITADEL_KEY`` environment
    variable), any other ``str`` as a path."""
    label = source_label(source)
    if isinstance(source, ZitadelKeyFile):
        return source
    if isinstance(source, Mapping):
        return _from_mapping(source, label)
    if label == "(JSON string)":
        return _from_json(str(source), label)
    if not str(source).strip():  # Path("") is ".", which would be "a directory"
        raise KeyFileError("''", "the path is empty: give the path of ZITADEL's JSON key file")
    try:
        # Only a regular file, and no more than the limit of it: never block on a FIFO or read
        # a device without end.
        mode = Path(source).stat().st_mode  # follows links; raises as open() would
        if stat.S_ISDIR(mode):
            raise KeyFileError(label, "is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise KeyFileError(label, "is not a regular file (a device, a FIFO or a socket?)")
        with Path(source).open("rb") as file:
            data = file.read(_MAX_KEY_FILE_BYTES + 1)
        if len(data) > _MAX_KEY_FILE_BYTES:
            raise KeyFileError(label, _TOO_LARGE)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise KeyFileError(label, "file not found") from None
    except PermissionError:
        raise KeyFileError(label, "permission denied") from None
    except UnicodeDecodeError:
        raise KeyFileError(label, "not UTF-8 text: expected ZITADEL's JSON key file") from None
    except OSError as exc:
        raise KeyFileError(label, f"cannot be read ({exc.strerror})") from None
    return _from_json(text, label)


def _from_json(text: str, label: str) -> ZitadelKeyFile:
    if len(text) > _MAX_KEY_FILE_BYTES:
        raise KeyFileError(label, _TOO_LARGE)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message holds a position, never the document itself.
        problem = f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        raise KeyFileError(label, problem) from None
    except RecursionError:
        raise KeyFileError(label, "not a key file (JSON nested too deeply)") from None
    if not isinstance(data, dict):
        raise KeyFileError(label, f"expected a JSON object, got {type(data).__name__}")
    return _from_mapping(data, label)


def _from_mapping(data: Mapping[str, Any], label: str) -> ZitadelKeyFile:
    kind = data.get("type")
    if kind is None:
        raise KeyFileError(
            label, "missing; expected 'application' or 'serviceaccount'", field="type"
        )
    if kind not in _REQUIRED_FIELDS:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        raise KeyFileError(
            label,
            f"unknown key type {shown!r}; expected 'application' (an API application's key) "
            "or 'serviceaccount' (a service user's key)",
            field="type",
        )
    for name in _REQUIRED_FIELDS[kind]:
        value = data.get(name)
        if value is None:
            article = "an" if kind == "application" else "a"
            raise KeyFileError(label, f"missing (required in {article} {kind} key)", field=name)
        if not isinstance(value, str):
            raise KeyFileError(label, f"must be a string, got {type(value).__name__}", field=name)
        if not value.strip():
            raise KeyFileError(label, "is empty", field=name)
    try:
        key = serialization.load_pem_private_key(data["key"].encode("utf-8"), password=None)
    except TypeError:
        raise KeyFileError(
            label, "the PEM key is encrypted; ZITADEL key files hold unencrypted keys", field="key"
        ) from None
    except (ValueError, UnicodeEncodeError):
        # cryptography's own message is not shown: we do not want any echo of the input.
        raise KeyFileError(
            label,
            "not a readable PEM private key (expected '-----BEGIN RSA PRIVATE KEY-----' "
            "in PKCS#1 or '-----BEGIN PRIVATE KEY-----' in PKCS#8)",
            field="key",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        got = type(key).__name__.lstrip("_")
        raise KeyFileError(label, f"expected an RSA private key, got {got}", field="key")
    if key.key_size < MIN_RSA_BITS:
        raise KeyFileError(
            label,
            f"RSA key of {key.key_size} bits is too small; at least {MIN_RSA_BITS} bits required",
            field="key",
        )
    return ZitadelKeyFile(
        type=kind,
        key_id=data["keyId"],
        client_id=data.get("clientId") if kind == "application" else None,
        app_id=data.get("appId") if kind == "application" else None,
        user_id=data.get("userId") if kind == "serviceaccount" else None,
        private_key=key,
    )


def source_label(source: KeyFileSource) -> str:
    """How messages name a key's source: its path, or what kind of value it was."""
    if isinstance(source, ZitadelKeyFile):
        return "(loaded key file)"
    if isinstance(source, Mapping):
        return "(mapping)"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return "(JSON string)"
    return f"'{Path(source)}'"


def require_key_type(
    key: ZitadelKeyFile,
    needed: Literal["application", "serviceaccount"],
    *,
    source: str,
    where: str,
) -> ZitadelKeyFile:
    """``key`` if it is of the ``needed`` kind; else ``WrongKeyTypeError`` saying which key
    goes where (the most common mix-up with ZITADEL's two kinds of key file)."""
    if key.type == needed:
        return key
    if needed == "application":
        problem = (
            f"a service user's key (user {key.user_id}, key id {key.key_id}) given to {where}, "
            'which needs an application\'s key ("type": "application"): ZITADEL\'s '
            "introspection endpoint and token exchange take only applications, and answer a "
            "service user's key with 400 unauthorized_client. Download a key of the API "
            "application (console: Projects > your project > the application > Keys); a "
            "service user's key is for calling APIs: ServiceAccountAuth(issuer, key_file=...) "
            "or fastapi-zitadel token"
        )
    else:
        problem = (
            f"an application's key (client {key.client_id}, key id {key.key_id}) given to "
            f'{where}, which needs a service user\'s key ("type": "serviceaccount"): '
            "ZITADEL's JWT bearer grant issues tokens only to service users, and answers an "
            "application's key with 500 server_error (zitadel/zitadel#9745). Create a key of "
            "the service user (console: Users > Service Users > the user > Keys); an "
            "application's key is for ZitadelIntrospection and TokenExchange"
        )
    raise WrongKeyTypeError(source, problem, key_type=key.type, needed=needed)
