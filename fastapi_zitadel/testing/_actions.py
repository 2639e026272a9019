"""Actions v2 in the stand-in: targets, event executions, and their delivery.

The API is ZITADEL's ``zitadel.action.v2.ActionService`` over its JSON gateway
(``/v2/actions/targets``, ``/v2/actions/executions``), for an IAM owner's token. Delivery is
as ZITADEL's: asynchronous (a worker thread, never inside the change that made the event), at
most once (no retry; a failed call is recorded and dropped), only the *best-matching* execution
per event (the exact event type, else the most specific group, else "all events"), and events
older than ``max_event_age`` dropped.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import string
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._directory import new_id
from ._events import SIGNATURE_HEADER, Event, PayloadFormat, rfc3339_nano, signature_header

TargetType = Literal["restWebhook", "restCall", "restAsync"]
PAYLOAD_TYPES = ("PAYLOAD_TYPE_JSON", "PAYLOAD_TYPE_JWT")
MAX_TIMEOUT = 270.0  # seconds; ZITADEL's limit on a target's timeout
_DURATION = re.compile(r"(\d+(?:\.\d{1,9})?)s")
_KEY_ALPHABET = string.ascii_letters + string.digits

# gRPC status codes in the gateway's error body, with their HTTP statuses (7 permission
# denied: 403, 12 unimplemented: 501, 16 unauthenticated: 401).
_INVALID_ARGUMENT, NOT_FOUND = 3, 5
_HTTP_STATUS = {_INVALID_ARGUMENT: 400, NOT_FOUND: 404, 7: 403, 12: 501, 16: 401}


class ApiError(ValueError):
    """An error of ZITADEL's v2 APIs: a gRPC ``code`` and its ``message`` (a ``ValueError``
    to the stand-in's Python API)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    def answer(self) -> JSONResponse:
        """The error as ZITADEL's JSON gateway answers it (6 already exists: 409)."""
        body = {"code": self.code, "message": str(self), "details": []}
        return JSONResponse(body, status_code=_HTTP_STATUS.get(self.code, 409))


@dataclass
class Target:
    """Where events are sent, and with what key. ``signing_key`` is shown once by ZITADEL
    (on creation, and when regenerated)."""

    id: str
    name: str
    endpoint: str
    signing_key: str = field(repr=False)
    target_type: TargetType = "restAsync"
    interrupt_on_error: bool = False
    timeout: float = 10.0
    payload_type: str = "PAYLOAD_TYPE_JSON"
    created: float = 0.0
    changed: float = 0.0

    def resource(self) -> dict[str, Any]:
        """The ``Target`` message as the JSON gateway answers it."""
        interrupt = {"interruptOnError": self.interrupt_on_error}
        kind = {} if self.target_type == "restAsync" else interrupt  # restAsync has no options
        return {
            "id": self.id,
            "creationDate": rfc3339_nano(self.created),
            "changeDate": rfc3339_nano(self.changed),
            "name": self.name,
            self.target_type: kind,
            "timeout": _duration(self.timeout),
            "endpoint": self.endpoint,
            "signingKey": self.signing_key,
            "payloadType": self.payload_type,
        }


ConditionKey = tuple[str, str]  # ("event", type) | ("group", prefix) | ("all", "")


@dataclass
class Execution:
    condition: ConditionKey
    targets: list[str]
    created: float
    changed: float

    def resource(self) -> dict[str, Any]:
        kind, value = self.condition
        event: dict[str, Any] = {"all": True} if kind == "all" else {kind: value}
        return {
            "condition": {"event": event},
            "creationDate": rfc3339_nano(self.created),
            "changeDate": rfc3339_nano(self.changed),
            "targets": list(self.targets),
        }


@dataclass(frozen=True)
class Delivery:
    """One attempt to call a target: its HTTP status, or why there was none."""

    event: Event
    target_id: str
    status: int | None
    error: str | None = None


class Actions:
    """Targets and event executions of the instance, and the worker that delivers events."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        sign_jwt: Callable[[Mapping[str, Any]], str],
        authorize: Callable[[Request], object],
        payload_format: PayloadFormat = "object",
        max_event_age: float | None = None,
    ) -> None:
        """``authorize`` raises ``ApiError`` unless the request carries an IAM owner's token."""
        self._clock = clock
        self._sign_jwt = sign_jwt
        self._authorize = authorize
        self.payload_format: PayloadFormat = payload_format
        self.max_event_age = max_event_age
        self.targets: dict[str, Target] = {}
        self.executions: dict[ConditionKey, Execution] = {}
        self.deliveries: list[Delivery] = []
        self._jobs: queue.Queue[tuple[Event, Target] | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()

    # The Python API -----------------------------------------------------------------------
    def add_target(
        self,
        endpoint: str,
        *,
        name: str | None = None,
        target_type: TargetType = "restAsync",
        interrupt_on_error: bool = False,
        timeout: float = 10.0,
        payload_type: str = "PAYLOAD_TYPE_JSON",
    ) -> Target:
        if payload_type not in PAYLOAD_TYPES:
            raise ApiError(
                _INVALID_ARGUMENT,
                f"payloadType {payload_type!r}: the stand-in sends PAYLOAD_TYPE_JSON or "
                "PAYLOAD_TYPE_JWT (it does not encrypt, PAYLOAD_TYPE_JWE)",
            )
        if not 0 <= timeout <= MAX_TIMEOUT:
            raise ApiError(_INVALID_ARGUMENT, "timeout must be between 0s and 270s")
        now = self._clock()
        target = Target(
            id=new_id(),
            name=name or endpoint,
            endpoint=endpoint,
            signing_key=_signing_key(),
            target_type=target_type,
            interrupt_on_error=interrupt_on_error,
            timeout=timeout,
            payload_type=payload_type,
            created=now,
            changed=now,
        )
        with self._lock:
            if any(other.name == target.name for other in self.targets.values()):
                raise ApiError(6, f"a target named {target.name!r} exists already")
            self.targets[target.id] = target
        return target

    def set_execution(self, condition: ConditionKey, targets: Iterable[str]) -> None:
        """Bind ``condition`` to ``targets`` (replacing its list); an empty list removes it."""
        ids = list(targets)
        with self._lock:
            for target in ids:
                if target not in self.targets:
                    raise ApiError(NOT_FOUND, f"target {target} does not exist")
            now = self._clock()
            existing = self.executions.get(condition)
            if not ids:
                self.executions.pop(condition, None)
            elif existing is None:
                self.executions[condition] = Execution(condition, ids, now, now)
            else:
                existing.targets, existing.changed = ids, now

    def delete_target(self, target_id: str) -> bool:
        """Remove the target and take it out of every execution (ZITADEL does both)."""
        with self._lock:
            found = self.targets.pop(target_id, None) is not None
            for key, execution in list(self.executions.items()):
                execution.targets = [t for t in execution.targets if t != target_id]
                if not execution.targets:
                    del self.executions[key]
            return found

    def publish(self, event: Event) -> None:
        """Queue ``event`` for the targets of the one execution ZITADEL runs for it (the exact
        type, else the longest matching group, ``user.human`` before ``user``, else all events);
        returns at once."""
        parts = event.event_type.split(".")
        groups = [".".join(parts[:end]) for end in range(len(parts) - 1, 0, -1)]
        keys = [("event", event.event_type)]
        keys += [("group", group + suffix) for group in groups for suffix in ("", ".*")]
        with self._lock:
            found = (self.executions.get(key) for key in [*keys, ("all", "")])
            execution = next((execution for execution in found if execution is not None), None)
            ids = [] if execution is None else execution.targets
            targets = [self.targets[t] for t in ids if t in self.targets]
            if not targets:
                return
            with self._idle:
                self._pending += len(targets)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._run, name="zitadel-standin-actions", daemon=True
                )
                self._worker.start()
        for target in targets:
            self._jobs.put((event, target))

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was sent (or failed); ``False`` on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Stop the worker; events still queued are dropped, as ZITADEL may drop them."""
        worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(None)
            worker.join(timeout=5)

    # Delivery -----------------------------------------------------------------------------
    def _run(self) -> None:
        with httpx.Client() as client:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                event, target = job
                try:
                    self.deliveries.append(self._deliver(client, event, target))
                finally:
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()

    def _deliver(self, client: httpx.Client, event: Event, target: Target) -> Delivery:
        now = self._clock()
        if self.max_event_age is not None and now - event.created_at > self.max_event_age:
            return Delivery(event, target.id, None, "dropped: older than max_event_age")
        fields = event.body(self.payload_format)
        if target.payload_type == "PAYLOAD_TYPE_JWT":
            # A compact JWS over the same fields, signed with the instance's web key (no exp or
            # iat of its own): the receiver checks it against the JWKS. ZITADEL signs the call
            # with the target's key as well, over the JWS (internal/execution/execution.go,
            # ``Call``: the header is set whenever the target has a key, and every target has).
            body = self._sign_jwt(fields).encode("ascii")
            content_type = "application/jwt"
        else:
            body = json.dumps(fields, separators=(",", ":")).encode()
            content_type = "application/json"
        signature = signature_header(target.signing_key, body, int(now))
        headers = {"Content-Type": content_type, SIGNATURE_HEADER: signature}
        try:
            answer = client.post(
                target.endpoint, content=body, headers=headers, timeout=target.timeout
            )
        except httpx.HTTPError as exc:  # at most once: recorded, never retried
            return Delivery(event, target.id, None, type(exc).__name__)
        return Delivery(event, target.id, answer.status_code)

    # The HTTP API (zitadel.action.v2.ActionService) ---------------------------------------------
    def routes(self) -> list[Route]:
        handlers = [
            ("/targets", self._create_target, ["POST"]),
            ("/targets/search", self._list_targets, ["POST"]),
            ("/targets/{id}", self._target, ["GET", "POST", "PATCH", "DELETE"]),
            ("/executions", self._set_execution, ["PUT"]),
            ("/executions/search", self._list_executions, ["POST"]),
        ]
        return [Route("/v2/actions" + path, self._api(h), methods=m) for path, h, m in handlers]

    def _api(
        self, handler: Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                self._authorize(request)
                body: Any = {}
                if request.method in ("POST", "PUT", "PATCH"):
                    raw = await request.body()
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                    except ValueError:
                        raise ApiError(_INVALID_ARGUMENT, "the body is not JSON") from None
                if not isinstance(body, dict):
                    raise ApiError(_INVALID_ARGUMENT, "the body must be a JSON object")
                return JSONResponse(await handler(request, body))
            except ApiError as error:
                return error.answer()

        return endpoint

    async def _create_target(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        for required in ("name", "endpoint"):
            if _text(body, required) is None:
                raise ApiError(_INVALID_ARGUMENT, f"{required} is required")
        target_type, interrupt = _target_type(body)
        if target_type is None:
            raise ApiError(_INVALID_ARGUMENT, "one of restWebhook, restCall, restAsync is required")
        target = self.add_target(
            body["endpoint"],
            name=body["name"],
            target_type=target_type,
            interrupt_on_error=interrupt,
            timeout=_seconds(body.get("timeout", "10s")),
            payload_type=body.get("payloadType") or "PAYLOAD_TYPE_JSON",
        )
        created = rfc3339_nano(target.created)
        return {"id": target.id, "creationDate": created, "signingKey": target.signing_key}

    async def _target(self, request: Request, body: dict[str, Any]) -> dict[str, Any]:
        target_id = request.path_params["id"]
        if request.method == "DELETE":
            found = self.delete_target(target_id)
            return {"deletionDate": rfc3339_nano(self._clock())} if found else {}
        target = self.targets.get(target_id)
        if target is None:
            raise ApiError(NOT_FOUND, f"target {target_id} does not exist")
        if request.method == "GET":
            return {"target": target.resource()}
        return self._update_target(target, body)

    def _update_target(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateTarget: only what the body names changes; ``expirationSigningKey`` (only
        ``"0s"`` is allowed) regenerates the key, which the answer then shows once."""
        if "payloadType" in body and body["payloadType"] not in (*PAYLOAD_TYPES, None):
            raise ApiError(_INVALID_ARGUMENT, "payloadType must be JSON or JWT")
        if "expirationSigningKey" in body and _seconds(body["expirationSigningKey"]) != 0:
            raise ApiError(_INVALID_ARGUMENT, "expirationSigningKey must be 0s")
        with self._lock:
            target.name = _text(body, "name") or target.name
            target.endpoint = _text(body, "endpoint") or target.endpoint
            if "timeout" in body:
                target.timeout = _seconds(body["timeout"])
            target_type, interrupt = _target_type(body)
            if target_type is not None:
                target.target_type, target.interrupt_on_error = target_type, interrupt
            if body.get("payloadType"):
                target.payload_type = body["payloadType"]
            answer: dict[str, Any] = {}
            if "expirationSigningKey" in body:
                target.signing_key = _signing_key()
                answer["signingKey"] = target.signing_key
            target.changed = self._clock()
        return {"changeDate": rfc3339_nano(target.changed), **answer}

    async def _list_targets(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        found = list(self.targets.values())
        for entry in body.get("filters") or []:
            if "inTargetIdsFilter" in entry:
                ids = set(entry["inTargetIdsFilter"].get("targetIds") or [])
                found = [target for target in found if target.id in ids]
            elif "targetNameFilter" in entry:
                match = _text_filter(entry["targetNameFilter"])
                found = [target for target in found if match(target.name)]
        return _listing("targets", found, body.get("pagination"))

    async def _set_execution(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        condition = _condition(body.get("condition"))
        targets = body.get("targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ApiError(_INVALID_ARGUMENT, "targets must be a list of target ids")
        self.set_execution(condition, targets)
        return {"setDate": rfc3339_nano(self._clock())}

    async def _list_executions(self, _request: Request, body: dict[str, Any]) -> dict[str, Any]:
        found = list(self.executions.values())
        for entry in body.get("filters") or []:
            if "targetFilter" in entry:
                wanted = entry["targetFilter"].get("targetId")
                found = [execution for execution in found if wanted in execution.targets]
            elif "inConditionsFilter" in entry:
                keys = {_condition(c) for c in entry["inConditionsFilter"].get("conditions") or []}
                found = [execution for execution in found if execution.condition in keys]
            elif "executionTypeFilter" in entry:
                kind = entry["executionTypeFilter"].get("executionType")
                if kind not in ("EXECUTION_TYPE_EVENT", "EXECUTION_TYPE_UNSPECIFIED", None):
                    found = []  # the stand-in has event executions only
        return _listing("executions", found, body.get("pagination"))


def _signing_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(32))


def _duration(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in its JSON form: ``10s``, ``1.5s``."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _seconds(value: Any) -> float:
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(_INVALID_ARGUMENT, f'{value!r} is not a duration such as "10s"')
    seconds = float(match.group(1))
    if seconds > MAX_TIMEOUT:
        raise ApiError(_INVALID_ARGUMENT, "timeout must be between 0s and 270s")
    return seconds


def _target_type(body: Mapping[str, Any]) -> tuple[TargetType | None, bool]:
    for kind in ("restWebhook", "restCall", "restAsync"):
        if kind in body:
            options = body[kind] or {}
            return kind, bool(options.get("interruptOnError", False))
    return None, False


def _condition(value: Any) -> ConditionKey:
    """An event condition: ``{"event": {"event": t}}``, ``{"group": g}`` or ``{"all": true}``."""
    if not isinstance(value, dict):
        raise ApiError(_INVALID_ARGUMENT, "condition is required")
    event = value.get("event")
    if not isinstance(event, dict):
        raise ApiError(
            _INVALID_ARGUMENT, 'the stand-in has event executions only: condition {"event": {...}}'
        )
    for kind in ("event", "group"):
        value = _text(event, kind)
        if value is not None:
            return (kind, value)
    if event.get("all") is True:
        return ("all", "")
    raise ApiError(_INVALID_ARGUMENT, "an event condition needs event, group or all")


def _text(body: Mapping[str, Any], key: str) -> str | None:
    """``body[key]`` if it is a non-empty string."""
    value = body.get(key)
    return value if isinstance(value, str) and value else None


_TEXT_METHODS: dict[str, Callable[[str, str], bool]] = {
    "TEXT_FILTER_METHOD_CONTAINS": str.__contains__,
    "TEXT_FILTER_METHOD_STARTS_WITH": str.startswith,
    "TEXT_FILTER_METHOD_ENDS_WITH": str.endswith,
}


def _text_filter(query: Mapping[str, Any]) -> Callable[[str], bool]:
    """A name filter's ``TextFilterMethod`` (``EQUALS`` if unknown; ``_IGNORE_CASE`` folds both)."""
    wanted, method = query.get("targetName", ""), query.get("method", "TEXT_FILTER_METHOD_EQUALS")
    compare = _TEXT_METHODS.get(method.removesuffix("_IGNORE_CASE"), str.__eq__)
    if method.endswith("_IGNORE_CASE"):
        return lambda name: compare(name.lower(), wanted.lower())
    return lambda name: compare(name, wanted)


def _listing(name: str, found: list[Target] | list[Execution], pagination: Any) -> dict[str, Any]:
    """A search answer: ``found`` oldest first (unless ``asc`` is false), one page of it."""
    items: list[Target | Execution] = sorted(found, key=lambda item: item.created)
    options = pagination if isinstance(pagination, dict) else {}
    if options.get("asc") is False:
        items = items[::-1]
    offset = int(options.get("offset") or 0)
    limit = int(options.get("limit") or 0)
    page = items[offset : offset + limit] if limit else items[offset:]
    return {
        # int64 fields are strings in proto JSON.
        "pagination": {"totalResult": str(len(items)), "appliedLimit": str(limit or 100)},
        name: [item.resource() for item in page],
    }
