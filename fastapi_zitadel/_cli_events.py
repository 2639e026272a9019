"""``fastapi-zitadel events setup`` and ``events send-test``: ZITADEL's side of the receiver.

``setup`` creates the Actions v2 target (a ``restWebhook`` to the receiver's URL) and, per
event type the receiver acts on, an execution that calls it. ZITADEL runs only the
best-matching execution of an event (exact type, then the longest matching group, then
"all"), so a new execution for a type would shadow the targets of a group or "all" execution
that matched it before: ours is created with those targets *and* ours, and an existing exact
execution gets ours added. Without a personal access token it prints the calls instead.

``send-test`` signs a test event as ZITADEL does and posts it: the receiver answers 200
("ignored": the type is made up) when the key and the URL are right, 401 when the key is not.
Only the public API of the package is used; the HMAC is written here, apart from the
receiver's check, so a mistake in one cannot hide in the other.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

import httpx

from fastapi_zitadel.types import REVOCATION_EVENTS

__all__ = ["add_commands", "run", "say"]

OK, USAGE, NETWORK, REJECTED = 0, 2, 4, 5
_ALL_EXECUTIONS = {"pagination": {"limit": 1000}}  # ListExecutions' largest page


def add_commands(commands: Any) -> None:
    events = commands.add_parser(
        "events", help="set up ZITADEL's Actions v2 events for the receiver, or test it"
    )
    actions = events.add_subparsers(dest="events_command", required=True)
    setup = actions.add_parser(
        "setup",
        help="create the target and executions in ZITADEL (or print the calls)",
        description="Create the Actions v2 target calling the receiver at --url, and an "
        "execution per event type, adding our target to existing executions rather than "
        "shadowing them. With no personal access token (--pat or ZITADEL_PAT) the calls are "
        "printed instead.",
    )
    setup.add_argument("--url", required=True, help="the receiver's public URL")
    setup.add_argument("--issuer", dest="events_issuer", help="ZITADEL's URL (ZITADEL_ISSUER)")
    setup.add_argument("--pat", help="an IAM owner's personal access token; prefer ZITADEL_PAT")
    setup.add_argument("--timeout", type=float, default=10.0, help="target timeout, seconds")
    test = actions.add_parser(
        "send-test",
        help="sign and send a test event to a receiver",
        description="Post a signed test event (an unknown type: the receiver ignores it) to "
        "URL; the key comes from --key or ZITADEL_EVENTS_SIGNING_KEY (the first of several).",
    )
    test.add_argument("target_url", metavar="URL", help="the receiver's URL")
    test.add_argument("--key", help="the target's signing key; prefer the variable")


def run(args: argparse.Namespace, out: TextIO) -> int:
    return _send_test(args, out) if args.events_command == "send-test" else _setup(args, out)


def say(out: TextIO, status: str, message: str) -> None:
    out.write(f"[{status}] {message}\n")


# send-test -----------------------------------------------------------------------------
def _signature(body: bytes, key: str, timestamp: int) -> str:
    mac = hmac.new(key.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _send_test(args: argparse.Namespace, out: TextIO) -> int:
    key = args.key or os.environ.get("ZITADEL_EVENTS_SIGNING_KEY", "").split(",")[0].strip()
    if not key:
        say(out, "usage", "send-test needs the signing key: --key or ZITADEL_EVENTS_SIGNING_KEY")
        return USAGE
    now = time.time()
    body = json.dumps(
        {
            "aggregateID": "fastapi-zitadel-test",
            "aggregateType": "fastapi_zitadel",
            "sequence": int(now * 1000),
            "event_type": "fastapi_zitadel.test",
            "created_at": datetime.fromtimestamp(now, tz=timezone.utc).isoformat(),
            "event_payload": {},
        }
    ).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "ZITADEL-Signature": _signature(body, key, int(now)),
    }
    try:
        answer = httpx.post(args.target_url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        say(out, "FAIL", f"send-test: {type(exc).__name__} reaching {args.target_url}")
        return NETWORK
    if answer.is_success:
        say(out, "ok", f"the receiver took the test event ({answer.status_code} {answer.text})")
        return OK
    if answer.status_code == 401:
        say(out, "FAIL", "the receiver refused the signature (401): is the key its own?")
        return REJECTED
    say(out, "FAIL", f"the receiver answered {answer.status_code}")
    return NETWORK


# setup ---------------------------------------------------------------------------------
def _target_ids(execution: Mapping[str, Any]) -> list[str]:
    """An execution's targets: ids (v2), or ``{"target": id}`` objects (v2beta)."""
    found = [
        t.get("target") if isinstance(t, Mapping) else t for t in execution.get("targets") or []
    ]
    return [target for target in found if isinstance(target, str)]


def best_match(event_type: str, executions: Sequence[Mapping[str, Any]]) -> list[str]:
    """The targets ZITADEL would call for ``event_type`` today (exact, group, all)."""
    groups: list[tuple[int, list[str]]] = []
    everything: list[str] = []
    for execution in executions:
        condition = (execution.get("condition") or {}).get("event") or {}
        if condition.get("event") == event_type:
            return _target_ids(execution)
        group = condition.get("group")
        if isinstance(group, str) and group and event_type.startswith(group.rstrip(".*") + "."):
            groups.append((len(group), _target_ids(execution)))
        if condition.get("all") is True:
            everything = _target_ids(execution)
    if groups:
        return max(groups, key=lambda found: found[0])[1]
    return everything


def executions_for(target_id: str, executions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``SetExecution`` bodies: one per event type, our target after the ones that the
    best-matching execution calls now."""
    bodies = []
    for event_type in REVOCATION_EVENTS:
        targets = [t for t in best_match(event_type, executions) if t != target_id]
        bodies.append(
            {"condition": {"event": {"event": event_type}}, "targets": [*targets, target_id]}
        )
    return bodies


def _setup(args: argparse.Namespace, out: TextIO) -> int:
    issuer = (args.events_issuer or os.environ.get("ZITADEL_ISSUER") or "").rstrip("/")
    if not issuer:
        say(out, "usage", "events setup needs ZITADEL's URL: --issuer or ZITADEL_ISSUER")
        return USAGE
    pat = args.pat or os.environ.get("ZITADEL_PAT")
    target = {
        "name": "fastapi-zitadel events",
        "endpoint": args.url,
        "timeout": f"{args.timeout:g}s",
        "restWebhook": {"interruptOnError": False},
        "payloadType": "PAYLOAD_TYPE_JSON",
    }
    if not pat:
        _print_calls(issuer, target, out)
        return OK
    headers = {"Authorization": f"Bearer {pat}", "Accept": "application/json"}
    try:
        with httpx.Client(base_url=issuer, headers=headers, timeout=15.0) as client:
            created = client.post("/v2/actions/targets", json=target)
            if not created.is_success:
                return _refused(out, "creating the target", created)
            answer = created.json()
            target_id, key = answer.get("id"), answer.get("signingKey")
            listed = client.post("/v2/actions/executions/search", json=_ALL_EXECUTIONS)
            if not listed.is_success:
                return _refused(out, "listing the executions", listed)
            existing = listed.json().get("executions") or listed.json().get("result") or []
            for body in executions_for(str(target_id), existing):
                done = client.put("/v2/actions/executions", json=body)
                if not done.is_success:
                    return _refused(out, "setting an execution", done)
    except httpx.HTTPError as exc:
        say(out, "FAIL", f"events setup: {type(exc).__name__} reaching {issuer}")
        return NETWORK
    say(out, "ok", f"target {target_id} calls {args.url} for {len(REVOCATION_EVENTS)} events")
    say(out, "next", "set the signing key in the API's environment (shown once, keep it secret):")
    out.write(f"ZITADEL_EVENTS_SIGNING_KEY={key}\n")
    return OK


def _refused(out: TextIO, what: str, answer: httpx.Response) -> int:
    say(out, "FAIL", f"{what}: ZITADEL answered {answer.status_code}")
    if answer.status_code in (401, 403):
        say(out, "fix", "use a personal access token of a service user that is IAM owner")
        return REJECTED
    return NETWORK


def _print_calls(issuer: str, target: dict[str, Any], out: TextIO) -> None:
    auth = '-H "Authorization: Bearer $ZITADEL_PAT" -H "Content-Type: application/json"'
    out.write("# 1. the target (its answer holds signingKey: ZITADEL_EVENTS_SIGNING_KEY)\n")
    out.write(f"curl -X POST {issuer}/v2/actions/targets {auth} \\\n  -d '{json.dumps(target)}'\n")
    out.write(
        "# 2. the executions that exist now: where one matches an event type below (exact,\n"
        "#    group or all), put its targets in front of ours, or ours would shadow them\n"
    )
    page = json.dumps(_ALL_EXECUTIONS)
    out.write(f"curl -X POST {issuer}/v2/actions/executions/search {auth} -d '{page}'\n")
    out.write("# 3. one execution per event type, calling our target ($TARGET_ID from step 1)\n")
    for body in executions_for("$TARGET_ID", []):
        data = json.dumps(body).replace('"$TARGET_ID"', '"\'"$TARGET_ID"\'"')
        out.write(f"curl -X PUT {issuer}/v2/actions/executions {auth} \\\n  -d '{data}'\n")
