"""No object of the library shows a token, assertion, secret or key in ``repr`` or ``str``.

Error trackers (Sentry and the like) record the ``repr`` of every local variable of a failing
frame, so an object that holds a token must not show it. This test builds the library's
objects in use (a token verified and cached, a service user's token fetched, a token
exchanged, client authentication signed), walks every object reachable from them through
attributes, slots, containers and closures, and checks each one's ``repr`` and ``str``.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from typing import Any

import httpx

from fastapi_zitadel import (
    ServiceAccountAuth,
    TokenExchange,
    ZitadelIntrospection,
)
from fastapi_zitadel.testing import ZitadelStandIn

from .helpers import STANDIN_ISSUER, World

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
# A signed JWT (a client assertion, a JWT access token): header and payload are base64url JSON.
JWT = re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}")


def reachable(*roots: object, limit: int = 50_000) -> Iterator[object]:
    """Every object reachable from ``roots`` through what a debugger or tracker would show."""
    seen: set[int] = set()
    stack: list[object] = list(roots)
    while stack and len(seen) < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType)):
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (str, bytes, int, float, bool)) or obj is None:
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
            continue
        if isinstance(obj, types.FunctionType):
            stack.extend(cell.cell_contents for cell in obj.__closure__ or () if _full(cell))
            continue
        if isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
            continue
        stack.extend(getattr(obj, "__dict__", {}).values())
        for klass in type(obj).__mro__:
            for slot in getattr(klass, "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    stack.append(getattr(obj, slot))


def _full(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def ours(obj: object) -> bool:
    return type(obj).__module__.startswith("fastapi_zitadel")


def shown(obj: object) -> str:
    return repr(obj) + "\n" + str(obj)


async def test_no_object_shows_a_secret(world: World) -> None:
    standin: ZitadelStandIn = world.standin
    robot = standin.add_service_user(
        world.user.org, "robot", roles={world.project: ["reader"]}, with_secret=True
    )
    assert robot.client_secret is not None
    gateway_project = standin.add_project("gateway")
    gateway = standin.add_web_app(
        gateway_project, "gateway", auth="private_key_jwt", grant_types=[EXCHANGE]
    )
    secret_app = standin.add_api_app(world.project, "by-secret", auth="basic")
    user_token = world.token()
    subject = standin.issue_token(
        world.user,
        gateway_project,
        scopes=["openid", f"urn:zitadel:iam:org:project:id:{world.project.id}:aud"],
    )

    def transport() -> dict[str, Any]:
        return {
            "http_client": httpx.AsyncClient(transport=standin.transport()),
            "clock": world.clock,
            "monotonic": world.clock,
        }

    by_key = world.client()
    by_secret = ZitadelIntrospection(
        STANDIN_ISSUER,
        client_id=secret_app.client_id,
        client_secret=secret_app.client_secret,
        **transport(),
    )
    service = ServiceAccountAuth(
        STANDIN_ISSUER, key_file=robot.key_file, project_id=world.project.id, **transport()
    )
    service_secret = ServiceAccountAuth(
        STANDIN_ISSUER,
        client_id=robot.username,
        client_secret=robot.client_secret,
        **transport(),
    )
    exchange = TokenExchange(STANDIN_ISSUER, key_file=gateway.key_file, **transport())
    async with by_key, by_secret, service, service_secret, exchange:
        principal = await by_key.verify(user_token)
        await by_secret.verify(user_token)
        service_token = await service.atoken()
        secret_token = await service_secret.atoken()
        exchanged = await exchange.aexchange(subject, audience=[world.project.id])

        secrets = {
            "bearer token": user_token,
            "subject token": subject,
            "service user token": service_token,
            "service user token (secret)": secret_token,
            "exchanged token": exchanged.access_token,
            "client secret": robot.client_secret,
            "API app secret": str(secret_app.client_secret),
        }
        for name, key_file in (
            ("API app key", world.app.key_file),
            ("service user key", robot.key_file),
            ("web app key", gateway.key_file),
        ):
            lines = [ln for ln in key_file["key"].splitlines() if ln and "-----" not in ln]
            secrets.update({f"{name}, line {i}": line for i, line in enumerate(lines)})

        roots = [
            by_key,
            by_secret,
            service,
            service_secret,
            exchange,
            exchanged,
            principal,
            standin,
        ]
        walked = [obj for obj in reachable(*roots) if ours(obj)]
        assert len(walked) > 50  # the walk reaches deep (caches, clients, signers, tokens)
        leaks = []
        for obj in walked:
            text = shown(obj)
            leaks += [f"{type(obj).__qualname__}: {n}" for n, s in secrets.items() if s in text]
            if JWT.search(text):
                leaks.append(f"{type(obj).__qualname__}: a signed JWT")
        assert not leaks, sorted(set(leaks))
