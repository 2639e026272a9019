"""ZITADEL's events as a test writes them: signed with hmac directly (not with the library's
signer, so a mistake on one side cannot hide behind the same one on the other), event bodies
shaped like ZITADEL's, an app serving one route behind the receiver, and an instance in each
validation mode on the ``jwt_world`` stand-in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone
from typing import Any

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection

from .jwt_support import JwtWorld

KEY = "events-signing-key-1"
OTHER_KEY = "events-signing-key-2"
PATH = "/zitadel/events"
INSTANCE = "280000000000000001"


def sign(body: bytes, key: str, t: int, *, extra: str = "") -> dict[str, str]:
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"ZITADEL-Signature": f"t={t}{extra},v1={mac}", "Content-Type": "application/json"}


def rfc3339(when: float) -> str:
    moment = datetime.fromtimestamp(when, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds, as ZITADEL


_sequence = iter(range(1, 1_000_000))


def event(
    event_type: str,
    aggregate_id: str,
    when: float,
    *,
    payload: Any = None,
    aggregate_type: str = "user",
    sequence: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "aggregateID": aggregate_id,
        "aggregateType": aggregate_type,
        "resourceOwner": "280000000000000002",
        "instanceID": INSTANCE,
        "version": "v1",
        "sequence": next(_sequence) if sequence is None else sequence,
        "event_type": event_type,
        "created_at": rfc3339(when),
        "userID": "280000000000000099",  # the editor: never the user the event is about
    }
    if payload is not None:
        body["event_payload"] = payload
    return body


def claims_of(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def app_for(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Principal = Depends(zitadel)) -> dict[str, Any]:  # noqa: B008
        return {"sub": principal.subject, "roles": sorted(principal.roles)}

    zitadel.install(app)
    return app


MODES = ["introspection", "local", "hybrid"]


def instance(jwt_world: JwtWorld, mode: str, **options: Any) -> ZitadelIntrospection:
    options = {"events_signing_key": KEY, **options}
    if mode == "local":
        return jwt_world.local(**options)
    if mode == "hybrid":
        return jwt_world.hybrid(**options)
    return jwt_world.project.introspection(
        clock=jwt_world.clock, monotonic=jwt_world.monotonic, **options
    )
