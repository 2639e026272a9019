"""``fastapi-zitadel``: diagnose a set-up, look at a token, sign an assertion, run a local IdP.

Most problems with ZITADEL and an API are set-up mistakes (wrong issuer, a key of the wrong
application, a wrong clock). ``check`` walks the chain an API depends on, step by step, and
names the cause and the fix of the first broken link. Exit codes tell the kind of problem:

    0 ok    2 usage    3 configuration    4 network or IdP    5 our credentials rejected
    6 (introspect) the token is not valid
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from fastapi_zitadel import (
    ClientCredentialsRejected,
    ConfigurationError,
    IdentityProviderError,
    InvalidTokenError,
    IssuerMismatch,
    KeyFileError,
    Principal,
    ZitadelError,
    ZitadelIntrospection,
)

__all__ = ["entry_point", "main"]

OK, USAGE, CONFIGURATION, NETWORK, CREDENTIALS, INVALID_TOKEN = 0, 2, 3, 4, 5, 6

_FLAGS = {
    "issuer": "ZITADEL's issuer URL (ZITADEL_ISSUER)",
    "validation": "introspection, local or hybrid (ZITADEL_VALIDATION)",
    "key_file": "path of the API application's JSON key (ZITADEL_KEY_FILE)",
    "client_id": "client id, with --client-secret (ZITADEL_CLIENT_ID)",
    "client_secret": "client secret; prefer ZITADEL_CLIENT_SECRET, flags show in `ps`",
    "audience": "accepted audiences, comma-separated (ZITADEL_AUDIENCE)",
    "project_id": "project resource id, for its role claim (ZITADEL_PROJECT_ID)",
    "introspection_endpoint": "skip discovery (ZITADEL_INTROSPECTION_ENDPOINT)",
}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "dev-issuer":
        from .testing.__main__ import main as dev_issuer

        dev_issuer(args)
        return OK
    try:
        zitadel = _configured(args)
    except KeyFileError as exc:
        _say(out, "FAIL", f"key file: {exc}")
        _say(
            out,
            "fix",
            "download a JSON key of the API application (ZITADEL console: "
            "Projects > your project > the API application > Keys) and set ZITADEL_KEY_FILE",
        )
        return CONFIGURATION
    except ConfigurationError as exc:
        _say(out, "FAIL", f"configuration: {exc}")
        return CONFIGURATION
    command = {"check": _check, "introspect": _introspect, "assertion": _assertion}[args.command]
    return asyncio.run(command(zitadel, args, out))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastapi-zitadel",
        description="Diagnose and use a fastapi-zitadel set-up. Settings come from ZITADEL_* "
        "environment variables; flags override them.",
        epilog="exit codes: 0 ok, 2 usage, 3 configuration, 4 network or IdP, "
        "5 our credentials rejected, 6 token not valid",
    )
    for name, help_text in _FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=help_text)
    parser.add_argument(
        "--allow-insecure-http", action="store_true", default=None, help="allow http:// issuers"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "check", help="validate the key, discovery, the issuer's keys and our credentials"
    )
    introspect = commands.add_parser("introspect", help="show what a token is worth")
    introspect.add_argument("token", nargs="?", default="-", help="the token, or - for stdin")
    introspect.add_argument("--json", action="store_true", help="print the Principal as JSON")
    commands.add_parser("assertion", help="print a fresh client assertion (for curl)")
    from .testing.__main__ import options as standin_options  # --port, --state-dir, --user...

    commands.add_parser(
        "dev-issuer", help="run the local ZITADEL stand-in", parents=[standin_options()]
    )
    return parser


def _configured(args: argparse.Namespace) -> ZitadelIntrospection:
    flags = {name: getattr(args, name) for name in [*_FLAGS, "allow_insecure_http"]}
    overrides = {name: value for name, value in flags.items() if value is not None}
    config = ZitadelIntrospection.from_env(**overrides).config  # every variable checked
    # Nothing cached, few retries: the command line reports what ZITADEL says right now.
    return ZitadelIntrospection(
        config=config, negative_cache_ttl=0, cache_ttl=0, max_retries=1, timeout=10
    )


async def _check(zitadel: ZitadelIntrospection, _args: argparse.Namespace, out: TextIO) -> int:
    config = zitadel.config
    client = zitadel.client
    if client is None:
        kind = "no client credentials (validation=local needs none)"
    elif client.key_id is not None:
        kind = f"key id {client.key_id}, client {client.client_id}"
    else:
        kind = f"client {client.client_id} with a client secret"
    mode = "" if config.validation == "introspection" else f", validation {config.validation}"
    _say(out, "ok", f"configuration: issuer {config.issuer}, {kind}{mode}")
    async with zitadel:
        skipped = config.introspection_endpoint is not None
        try:
            endpoint = await zitadel.discover()
        except IssuerMismatch as exc:
            _say(out, "FAIL", f"discovery: {exc.description}")
            _say(
                out,
                "fix",
                "set ZITADEL_ISSUER to exactly the issuer of the discovery "
                "document: scheme, host and port, no trailing slash",
            )
            return CONFIGURATION
        except IdentityProviderError as exc:
            _say(out, "FAIL", f"discovery at {config.issuer}: {exc.description}")
            _say(
                out,
                "fix",
                "check ZITADEL_ISSUER (your instance's URL, e.g. "
                "https://acme-xyz.zitadel.cloud) and that this machine can reach it",
            )
            return NETWORK
        if config.validation == "local":
            _say(out, "ok", f"discovery: issuer matches; keys at {endpoint}")
        elif skipped:
            _say(out, "ok", f"discovery: skipped, introspection endpoint set to {endpoint}")
        else:
            _say(out, "ok", f"discovery: issuer matches; introspection endpoint {endpoint}")
        if config.validation != "introspection":
            failed = await _check_keys(zitadel, out)
            if failed is not None:
                return failed
            if config.validation == "local":
                _say(out, "ok", "all checks passed")
                return OK
        return await _check_credentials(zitadel, out)


async def _check_keys(zitadel: ZitadelIntrospection, out: TextIO) -> int | None:
    """The issuer's keys, as local verification sees them; an exit code if they fail."""
    try:
        keys = await zitadel.signing_keys()
    except IdentityProviderError as exc:
        _say(out, "FAIL", f"signing keys: {exc.description}")
        _say(
            out,
            "fix",
            "the JWKS (the discovery document's jwks_uri) must answer a JSON key set with at "
            "least one RSA, EC or Ed25519 signing key; check that this machine can reach it",
        )
        return NETWORK
    by_kid: dict[str, list[str]] = {}
    for key in keys:
        by_kid.setdefault(f"{key['kid']} ({key['key']})", []).append(key["algorithm"])
    listed = "; ".join(f"{kid}: {', '.join(algs)}" for kid, algs in by_kid.items())
    _say(out, "ok", f"signing keys: {len(by_kid)} usable: {listed}")
    return None


async def _check_credentials(zitadel: ZitadelIntrospection, out: TextIO) -> int:
    try:
        principal = await zitadel.verify("fastapi-zitadel-check-" + secrets.token_hex(16))
    except InvalidTokenError:
        _say(out, "ok", "credentials: accepted (a made-up token introspected as inactive)")
        _say(out, "ok", "all checks passed")
        return OK
    except ClientCredentialsRejected as exc:
        _say(
            out,
            "FAIL",
            f"credentials: the IdP rejected our client authentication "
            f"(HTTP {exc.status} {exc.error_code})",
        )
        _say(out, "fix", exc.hint)
        return CREDENTIALS
    except IdentityProviderError as exc:
        _say(out, "FAIL", f"introspection: {exc.description}")
        return NETWORK
    _say(out, "FAIL", f"a made-up token introspected as active ({principal.subject})")
    return CREDENTIALS


async def _introspect(zitadel: ZitadelIntrospection, args: argparse.Namespace, out: TextIO) -> int:
    from_stdin = args.token in (None, "-")
    token = sys.stdin.readline().strip() if from_stdin else args.token
    async with zitadel:
        try:
            principal = await zitadel.verify(token)
        except InvalidTokenError as exc:
            _say(out, "invalid", exc.description)
            return INVALID_TOKEN
        except ClientCredentialsRejected as exc:
            _say(out, "FAIL", f"our credentials were rejected: {exc.description}")
            return CREDENTIALS
        except ZitadelError as exc:
            _say(out, "FAIL", str(exc))
            return NETWORK
    if args.json:
        out.write(json.dumps(principal.model_dump(mode="json"), indent=2, default=str) + "\n")
    else:
        out.write(_table(principal))
    return OK


async def _assertion(zitadel: ZitadelIntrospection, _args: argparse.Namespace, out: TextIO) -> int:
    try:
        assertion = zitadel.client_assertion()
    except ConfigurationError:
        _say(out, "FAIL", "assertions need a key file (ZITADEL_KEY_FILE), not a client secret")
        return CONFIGURATION
    out.write(assertion + "\n")
    async with zitadel:
        try:
            endpoint = await zitadel.discover()
        except IdentityProviderError as exc:
            _say(out, "FAIL", f"discovery at {zitadel.issuer}: {exc.description}")
            return NETWORK
    print(
        "use it like this (it is valid for "
        f"{zitadel.config.assertion_lifetime:.0f} s):\n"
        f"  curl -X POST {endpoint} -d client_assertion_type="
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer "
        '-d client_assertion="$ASSERTION" -d token="$TOKEN"',
        file=sys.stderr,
    )
    return OK


def _table(principal: Principal) -> str:
    verified = {"jwt": "JWT verified locally", "introspection": "introspection"}
    rows: list[tuple[str, Any]] = [
        ("verdict", "active"),
        ("verified by", verified[principal.verified_by]),
        ("subject", principal.subject),
        ("username", principal.username),
        ("name", principal.name),
        ("email", principal.email),
        ("client id", principal.client_id),
        ("scopes", " ".join(sorted(principal.scopes))),
        ("audience", ", ".join(principal.audience)),
        ("expires", principal.expires_at.isoformat() if principal.expires_at else None),
        ("organization", principal.organization.id if principal.organization else None),
    ]
    lines = [f"{label:<14}{value}" for label, value in rows if value]
    if principal.roles:
        lines.append("roles")
        for role, orgs in sorted(principal.roles.items()):
            where = ", ".join(f"{org} ({domain})" for org, domain in orgs.items()) or "-"
            lines.append(f"  {role:<12}{where}")
    if principal.metadata:
        lines.append("metadata      " + ", ".join(sorted(principal.metadata)))
    return "\n".join(lines) + "\n"


def _say(out: TextIO, status: str, message: str) -> None:
    out.write(f"[{status}] {message}\n")


def entry_point() -> None:
    """The ``fastapi-zitadel`` console script."""
    sys.exit(main())
