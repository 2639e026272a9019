"""``fastapi-zitadel``: diagnose a set-up, look at a token, sign an assertion, get a service
user's token, run a local IdP, set up ZITADEL's events (``_cli_events.py``).

Most problems with ZITADEL and an API are set-up mistakes (wrong issuer, a key of the wrong
application or of a service user, a wrong clock). ``check`` walks the chain an API depends on,
step by step, and names the cause and the fix of the first broken link; ``token`` prints an
access token of a service user (its key or its secret) for calling an API, and nothing else
on stdout. The exit code tells the kind of problem (the codes below, listed in ``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from fastapi_zitadel import (
    ClientCredentialsRejected,
    ConfigurationError,
    IdentityProviderError,
    InvalidTokenError,
    IssuerMismatch,
    KeyFileError,
    Principal,
    ServiceAccountAuth,
    WrongKeyTypeError,
    ZitadelError,
    ZitadelIntrospection,
)

from ._cli_events import add_commands as add_event_commands
from ._cli_events import run as run_events
from ._cli_events import say as _say

__all__ = ["entry_point", "main"]

OK, USAGE, CONFIGURATION, NETWORK, CREDENTIALS, INVALID_TOKEN = 0, 2, 3, 4, 5, 6
_INTROSPECT_USAGE = (
    "introspect needs a token: fastapi-zitadel introspect TOKEN, or pipe it: "
    'echo "$TOKEN" | fastapi-zitadel introspect'
)

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


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run a command; ``out`` gets its output, ``err`` what ``token`` says besides the token."""
    parser = _parser()
    args = parser.parse_args(
        _token_argument_protected(list(sys.argv[1:] if argv is None else argv))
    )
    # One line per finding: the library's own log records would say each failure twice.
    library_log = logging.getLogger("fastapi_zitadel")
    propagate, silence = library_log.propagate, logging.NullHandler()
    if not args.verbose:
        library_log.propagate = False
        library_log.addHandler(silence)
    try:
        return _run(parser, args, out or sys.stdout, err or sys.stderr)
    finally:
        library_log.removeHandler(silence)
        library_log.propagate = propagate


def _run(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    if args.command == "introspect" and args.token in (None, "-") and sys.stdin.isatty():
        _say(out, "usage", _INTROSPECT_USAGE)
        return USAGE
    if args.command == "dev-issuer":
        from .testing.__main__ import serve

        serve(args, prog="fastapi-zitadel dev-issuer")  # its messages name the command typed
        return OK
    if args.command == "token":
        return _token(parser, args, out, err)
    if args.command == "events":
        return run_events(args, out)
    try:
        zitadel = _configured(args)
    except WrongKeyTypeError as exc:
        return _fail(
            out,
            CONFIGURATION,
            f"key file: {exc}",
            "set ZITADEL_KEY_FILE to a key of the API application; to check this service "
            "user's key, run: fastapi-zitadel token --key-file PATH --project-id PROJECT",
        )
    except KeyFileError as exc:
        return _fail(
            out,
            CONFIGURATION,
            f"key file: {exc}",
            "download a JSON key of the API application (ZITADEL console: "
            "Projects > your project > the API application > Keys) and set ZITADEL_KEY_FILE",
        )
    except ConfigurationError as exc:
        return _fail(out, CONFIGURATION, f"configuration: {exc}")
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
    _add_settings(parser, default=None)
    # The same flags after the command too (``fastapi-zitadel check --issuer X``); there they
    # override only when given.
    settings = argparse.ArgumentParser(add_help=False)
    _add_settings(settings, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("check", "validate the key, discovery, the issuer's keys and our credentials"),
        ("introspect", "show what a token is worth"),
        ("assertion", "print a fresh client assertion (for curl)"),
    ):
        commands.add_parser(name, help=help_text, parents=[settings])
    introspect = commands.choices["introspect"]
    introspect.add_argument(
        "token",
        nargs="?",
        default="-",
        help="the token (a 'Bearer ' prefix is dropped), or - for stdin",
    )
    introspect.add_argument("--json", action="store_true", help="print the Principal as JSON")
    token = commands.add_parser(
        "token",
        help="print an access token of a service user (its key, or its client id and secret)",
        description="Get an access token of a service user from ZITADEL's token endpoint and "
        "print it on stdout (and nothing else). The issuer comes from --issuer or "
        "ZITADEL_ISSUER; the secret from --client-secret or ZITADEL_CLIENT_SECRET.",
    )
    credential = token.add_mutually_exclusive_group()
    credential.add_argument(
        "--key-file", dest="service_key_file", help="the service user's JSON key (jwt-bearer)"
    )
    credential.add_argument(
        "--client-id", dest="service_client_id", help="the service user's name (client credentials)"
    )
    token.add_argument(
        "--client-secret", dest="service_client_secret", help="its secret; prefer the variable"
    )
    token.add_argument(
        "--project-id",
        dest="target_projects",
        action="append",
        default=[],
        help="the called API's project (its audience scope); repeatable",
    )
    token.add_argument("--roles", action="store_true", help="ask for the user's roles too")
    token.add_argument(
        "--scope", dest="extra_scopes", action="append", default=[], help="another scope"
    )
    from .testing.__main__ import options as standin_options  # --port, --state-dir, --user...

    commands.add_parser(
        "dev-issuer", help="run the local ZITADEL stand-in", parents=[standin_options()]
    )
    add_event_commands(commands)  # events setup, events send-test
    return parser


def _token_argument_protected(argv: list[str]) -> list[str]:
    """``argv`` with an ``introspect`` token that starts with ``-`` moved behind ``--``.

    Tokens are random base64url, so one in 64 starts with ``-``: argparse would take it for
    an option, refuse it and print it in its error. Anything after ``introspect`` that is not
    one of its options (or an option's value) is the token.
    """
    if "introspect" not in argv or "--" in argv:
        return argv
    index = argv.index("introspect") + 1
    takes_value = {"--" + name.replace("_", "-") for name in _FLAGS}
    while index < len(argv):
        word = argv[index]
        name = word.split("=", 1)[0]
        if name in takes_value:
            index += 1 if "=" in word else 2
        elif word in _INTROSPECT_SWITCHES or not word.startswith("-") or word == "-":
            index += 1
        else:
            return [*argv[:index], *argv[index + 1 :], "--", word]  # options stay options
    return argv


_INTROSPECT_SWITCHES = {"--json", "--allow-insecure-http", "-v", "--verbose", "-h", "--help"}


def _add_settings(parser: argparse.ArgumentParser, *, default: Any) -> None:
    for name, help_text in _FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, help=help_text, default=default
        )
    parser.add_argument(
        "--allow-insecure-http", action="store_true", default=default, help="allow http:// issuers"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default or False,
        help="also print the library's log lines",
    )


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
    if client is not None and client.key_id is not None:
        _say(
            out,
            "ok",
            'key: an application\'s key ("type": "application"), the kind that introspects',
        )
    async with zitadel:
        try:
            endpoint = await zitadel.discover()
        except IdentityProviderError as exc:
            return _discovery_failed(exc, config.issuer, out)
        if config.validation == "local":
            _say(out, "ok", f"discovery: issuer matches; keys at {endpoint}")
        elif config.introspection_endpoint is not None:
            _say(out, "ok", f"discovery: skipped, introspection endpoint set to {endpoint}")
        else:
            _say(out, "ok", f"discovery: issuer matches; introspection endpoint {endpoint}")
        if config.validation != "introspection":
            try:  # the issuer's keys, as local verification sees them
                keys = await zitadel.signing_keys()
            except IdentityProviderError as exc:
                return _fail(
                    out,
                    NETWORK,
                    f"signing keys: {exc.description}",
                    "the JWKS (the discovery document's jwks_uri) must answer a JSON key set with "
                    "at least one RSA, EC or Ed25519 signing key; check that this machine can "
                    "reach it",
                )
            by_kid: dict[str, list[str]] = {}
            for key in keys:
                by_kid.setdefault(f"{key['kid']} ({key['key']})", []).append(key["algorithm"])
            listed = "; ".join(f"{kid}: {', '.join(algs)}" for kid, algs in by_kid.items())
            _say(out, "ok", f"signing keys: {len(by_kid)} usable: {listed}")
        if config.validation != "local":
            failed = await _check_credentials(zitadel, out)
            if failed is not None:
                return failed
        _say(out, "ok", "all checks passed")
        return OK


def _discovery_failed(exc: IdentityProviderError, issuer: str, out: TextIO) -> int:
    """Say why discovery failed and what to fix; the exit code."""
    if isinstance(exc, IssuerMismatch):
        return _fail(
            out,
            CONFIGURATION,
            f"discovery: {exc.description}",
            "set ZITADEL_ISSUER to exactly the issuer of the discovery "
            "document: scheme, host and port, no trailing slash",
        )
    if "TLS handshake" in exc.description and issuer.startswith("https:"):
        fix = f"the issuer answers plain http: set ZITADEL_ISSUER=http:{issuer[6:]}"
    else:
        fix = (
            "check ZITADEL_ISSUER (your instance's URL, e.g. "
            "https://acme-xyz.zitadel.cloud) and that this machine can reach it"
        )
    return _fail(out, NETWORK, f"discovery at {issuer}: {exc.description}", fix)


async def _check_credentials(zitadel: ZitadelIntrospection, out: TextIO) -> int | None:
    """Introspect a made-up token, then reach the shared tier; an exit code if that fails."""
    try:
        principal = await zitadel.verify("fastapi-zitadel-check-" + secrets.token_hex(16))
    except InvalidTokenError:
        _say(out, "ok", "credentials: accepted (a made-up token introspected as inactive)")
        return await _check_redis(zitadel, out)
    except ClientCredentialsRejected as exc:
        return _fail(
            out,
            CREDENTIALS,
            "credentials: the IdP rejected our client authentication "
            f"(HTTP {exc.status} {exc.error_code})",
            exc.hint,
        )
    except IdentityProviderError as exc:
        configured = zitadel.config.introspection_endpoint
        if configured is not None:
            fix = (
                f"ZITADEL_INTROSPECTION_ENDPOINT is set to {configured}: unset it to use the "
                f"one discovery names (ZITADEL's is {zitadel.issuer}/oauth/v2/introspect)"
            )
        else:
            fix = (
                "the introspection endpoint that discovery names did not answer usably: check "
                "that ZITADEL is up and reachable from here, then run check again"
            )
        return _fail(out, NETWORK, f"introspection: {exc.description}", fix)
    return _fail(out, CREDENTIALS, f"a made-up token introspected as active ({principal.subject})")


async def _check_redis(zitadel: ZitadelIntrospection, out: TextIO) -> int | None:
    """With ``ZITADEL_REDIS_URL``: connect and PING, as the shared tier will (the URL's form
    was checked at construction; here, whether that Redis answers)."""
    configured = zitadel.config.redis_url
    if configured is None:
        return None
    import redis.asyncio as aioredis  # installed: the configuration needs it
    from redis.exceptions import AuthenticationError, RedisError

    url = configured.get_secret_value()
    parts = urlsplit(url)  # where it points, for the messages; never its password
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    if parts.scheme == "rediss":
        where += " (TLS)"
    client = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await asyncio.wait_for(client.ping(), timeout=10)
    except AuthenticationError:
        return _fail(
            out,
            CREDENTIALS,
            f"shared cache: Redis at {where} refused our password or user",
            "check the user and password in ZITADEL_REDIS_URL",
        )
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        return _fail(
            out,
            NETWORK,
            f"shared cache: Redis at {where} did not answer ({type(exc).__name__})",
            "check ZITADEL_REDIS_URL (host, port, rediss:// for TLS) and that this machine can "
            "reach it; without it every replica caches on its own",
        )
    finally:
        await client.aclose()
    _say(out, "ok", f"shared cache: Redis at {where} answered")
    return None


async def _introspect(zitadel: ZitadelIntrospection, args: argparse.Namespace, out: TextIO) -> int:
    token = sys.stdin.readline().strip() if args.token in (None, "-") else args.token
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer" and rest:  # pasted from an Authorization header
        token = rest.strip()
    if not token.strip():  # `introspect </dev/null`, an empty $TOKEN: a usage error
        _say(out, "usage", _INTROSPECT_USAGE)
        return USAGE
    async with zitadel:
        try:
            await zitadel.discover()  # first, so that its failures read as in `check`
        except IdentityProviderError as exc:
            return _discovery_failed(exc, zitadel.issuer, out)
        try:
            principal = await zitadel.verify(token)
        except InvalidTokenError as exc:
            _say(out, "invalid", exc.description + (f": {exc.detail}" if exc.detail else ""))
            return INVALID_TOKEN
        except ClientCredentialsRejected as exc:
            return _fail(out, CREDENTIALS, f"our credentials were rejected: {exc.description}")
        except ZitadelError as exc:
            return _fail(out, NETWORK, str(exc))
    if args.json:
        out.write(json.dumps(principal.model_dump(mode="json"), indent=2, default=str) + "\n")
    else:
        out.write(_table(principal))
        note = _roles_note(principal, zitadel.config.project_id)
        if note:
            _say(out, "note", note)
    return OK


_PROJECT_ROLES = re.compile(r"urn:zitadel:iam:org:project:(\w+):roles")


def _roles_note(principal: Principal, project_id: str | None) -> str | None:
    """Why a token shows no roles when it carries some of another project."""
    if principal.roles or project_id is None:
        return None
    others = sorted(
        match[1]
        for claim in principal.claims
        if (match := _PROJECT_ROLES.fullmatch(claim)) and match[1] != project_id
    )
    if not others:
        return None
    return (
        f"no roles of project {project_id} (ZITADEL_PROJECT_ID), but the token carries roles of "
        f"project {', '.join(others)}: is ZITADEL_PROJECT_ID the project of this API?"
    )


async def _assertion(zitadel: ZitadelIntrospection, _args: argparse.Namespace, out: TextIO) -> int:
    try:
        assertion = zitadel.client_assertion()
    except ConfigurationError:
        return _fail(
            out, CONFIGURATION, "assertions need a key file (ZITADEL_KEY_FILE), not a client secret"
        )
    out.write(assertion + "\n")
    async with zitadel:
        try:
            endpoint = await zitadel.discover()
        except IdentityProviderError as exc:
            return _fail(out, NETWORK, f"discovery at {zitadel.issuer}: {exc.description}")
    print(
        f"use it like this (it is valid for {zitadel.config.assertion_lifetime:.0f} s):\n"
        f"  curl -X POST {endpoint} -d client_assertion_type="
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer "
        '-d client_assertion="$ASSERTION" -d token="$TOKEN"',
        file=sys.stderr,
    )
    return OK


def _token(
    parser: argparse.ArgumentParser, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``token``: the access token on ``out``; what happened on ``err``."""
    issuer = args.issuer or os.environ.get("ZITADEL_ISSUER")
    if not issuer:
        parser.error("token needs the issuer: --issuer URL or ZITADEL_ISSUER")
    secret = args.service_client_secret or os.environ.get("ZITADEL_CLIENT_SECRET")
    if args.service_key_file is not None:
        credentials: dict[str, Any] = {"key_file": args.service_key_file}
    elif args.service_client_id is not None:
        if not secret:
            parser.error("--client-id needs the secret: --client-secret or ZITADEL_CLIENT_SECRET")
        credentials = {"client_id": args.service_client_id, "client_secret": secret}
    else:
        parser.error("token needs the service user's --key-file, or --client-id and its secret")
    insecure = args.allow_insecure_http or os.environ.get(
        "ZITADEL_ALLOW_INSECURE_HTTP", ""
    ).lower() in ("1", "true", "yes")
    try:
        auth = ServiceAccountAuth(
            issuer,
            project_id=args.target_projects,
            roles=args.roles,
            scopes=args.extra_scopes,
            allow_insecure_http=insecure,
            timeout=10,
            max_retries=1,
            **credentials,
        )
    except WrongKeyTypeError as exc:
        return _fail(
            err,
            CONFIGURATION,
            f"key file: {exc}",
            "give the key of the service user that calls the API",
        )
    except ConfigurationError as exc:
        return _fail(err, CONFIGURATION, f"configuration: {exc}")
    if not args.target_projects:
        _say(
            err,
            "note",
            "no --project-id: the token carries no API's audience, and an API's introspection "
            "answers inactive for it",
        )
    try:
        with auth:
            token = auth.token()
    except ClientCredentialsRejected as exc:
        return _fail(err, CREDENTIALS, f"token: {exc.description}", exc.hint)
    except IdentityProviderError as exc:
        return _fail(err, NETWORK, f"token: {exc.description}")
    who = f"key id {auth.key_id}" if auth.key_id else "client credentials"
    _say(err, "ok", f"token of service user {auth.client_id} ({who}), scope: {auth.scope}")
    out.write(token + "\n")
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
        ("acting", f"{principal.actor.subject} for the subject" if principal.actor else None),
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


def _fail(out: TextIO, code: int, message: str, fix: str | None = None) -> int:
    """Say what failed (and how to fix it); ``code``, the exit code."""
    _say(out, "FAIL", message)
    if fix is not None:
        _say(out, "fix", fix)
    return code


def entry_point() -> None:
    sys.exit(main())
