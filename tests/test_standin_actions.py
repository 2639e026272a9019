"""The stand-in's Actions v2: ZITADEL's target and execution API (for an IAM owner's token),
and events sent to targets as ZITADEL sends them: signed, asynchronously, at most once, only
by the best-matching execution."""

import base64
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastapi_zitadel.testing import LoopbackServer, StandInEvents, StandInProject, ZitadelStandIn

from .helpers import FakeClock

pytestmark = pytest.mark.loopback


@dataclass
class Receiver:
    """A target on a loopback port: records what it is sent, answers ``status``, and holds
    each request while ``gate`` is closed."""

    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def __post_init__(self) -> None:
        self.gate.set()

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        self.arrived.set()
        self.gate.wait(10)
        self.received.append((dict(request.headers), body))
        return Response(status_code=self.status)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    app = Starlette(routes=[Route("/events", found.endpoint, methods=["POST"])])
    with LoopbackServer(app) as url:
        found.url = url + "/events"
        yield found
        found.gate.set()


@pytest.fixture
def standin() -> Iterator[ZitadelStandIn]:
    standin = ZitadelStandIn()
    with standin.serve():
        yield standin
    standin.close()


@pytest.fixture
def project(standin: ZitadelStandIn) -> Iterator[StandInProject]:
    with StandInProject(standin) as project:
        yield project


def api(standin: ZitadelStandIn, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=standin.issuer, headers=headers, timeout=10)


def verify(key: str, headers: dict[str, str], body: bytes) -> None:
    stamp, signature = (part.split("=", 1)[1] for part in headers["zitadel-signature"].split(","))
    expected = hmac.new(key.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)


def test_the_api_wants_an_iam_owners_token(
    standin: ZitadelStandIn, project: StandInProject
) -> None:
    body = {"name": "t", "endpoint": "http://127.0.0.1:9/x", "restAsync": {}}
    with api(standin) as anonymous:
        answer = anonymous.post("/v2/actions/targets", json=body)
        assert answer.status_code == 401
        assert answer.json()["code"] == 16
    robot = standin.add_service_user(project.org, "plain")
    with api(standin, standin.personal_access_token(robot)) as plain:
        assert plain.post("/v2/actions/targets", json=body).status_code == 403
    with api(standin, project.token("alice")) as person:
        assert person.post("/v2/actions/targets", json=body).status_code == 403
    owner_token = standin.admin_token()
    with api(standin, owner_token) as owner:
        assert owner.post("/v2/actions/targets", json=body).status_code == 200
    standin.revoke(owner_token)
    with api(standin, owner_token) as revoked:
        assert revoked.post("/v2/actions/targets/search", json={}).status_code == 401


def test_targets_crud(standin: ZitadelStandIn) -> None:
    with api(standin, standin.admin_token()) as client:
        created = client.post(
            "/v2/actions/targets",
            json={
                "name": "cache",
                "endpoint": "https://api.example.com/zitadel/events",
                "restWebhook": {"interruptOnError": True},
                "timeout": "2.5s",
            },
        ).json()
        assert set(created) == {"id", "creationDate", "signingKey"}
        target = client.get(f"/v2/actions/targets/{created['id']}").json()["target"]
        assert target["restWebhook"] == {"interruptOnError": True}
        assert target["timeout"] == "2.5s"
        assert target["payloadType"] == "PAYLOAD_TYPE_JSON"
        assert target["signingKey"] == created["signingKey"]
        # UpdateTarget is POST in v2 (PATCH in earlier drafts): only what is named changes.
        changed = client.post(
            f"/v2/actions/targets/{created['id']}", json={"endpoint": "https://b.example/e"}
        ).json()
        assert set(changed) == {"changeDate"}
        rotated = client.patch(
            f"/v2/actions/targets/{created['id']}",
            json={"expirationSigningKey": "0s", "restAsync": {}},
        ).json()
        assert rotated["signingKey"] != created["signingKey"]
        target = client.get(f"/v2/actions/targets/{created['id']}").json()["target"]
        assert (target["endpoint"], target["name"]) == ("https://b.example/e", "cache")
        assert target["restAsync"] == {}
        assert "restWebhook" not in target
        other = client.post(
            "/v2/actions/targets",
            json={"name": "other", "endpoint": "https://c.example/e", "restCall": {}},
        ).json()
        listed = client.post("/v2/actions/targets/search", json={}).json()
        assert listed["pagination"]["totalResult"] == "2"
        assert [t["id"] for t in listed["targets"]] == [created["id"], other["id"]]
        by_name = client.post(
            "/v2/actions/targets/search",
            json={
                "filters": [
                    {
                        "targetNameFilter": {
                            "targetName": "OTH",
                            "method": "TEXT_FILTER_METHOD_STARTS_WITH_IGNORE_CASE",
                        }
                    }
                ]
            },
        ).json()
        assert [t["id"] for t in by_name["targets"]] == [other["id"]]
        by_id = client.post(
            "/v2/actions/targets/search",
            json={
                "filters": [{"inTargetIdsFilter": {"targetIds": [created["id"]]}}],
                "pagination": {"limit": 1},
            },
        ).json()
        assert [t["id"] for t in by_id["targets"]] == [created["id"]]
        assert "deletionDate" in client.delete(f"/v2/actions/targets/{other['id']}").json()
        assert client.delete(f"/v2/actions/targets/{other['id']}").status_code == 200
        assert client.get(f"/v2/actions/targets/{other['id']}").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "https://a/e", "restAsync": {}},
        {"name": "n", "restAsync": {}},
        {"name": "n", "endpoint": "https://a/e"},
        {"name": "n", "endpoint": "https://a/e", "restAsync": {}, "timeout": "300s"},
        {"name": "n", "endpoint": "https://a/e", "restAsync": {}, "timeout": "ten"},
        {
            "name": "n",
            "endpoint": "https://a/e",
            "restAsync": {},
            "payloadType": "PAYLOAD_TYPE_JWE",
        },
    ],
)
def test_bad_targets_are_400(standin: ZitadelStandIn, body: dict[str, Any]) -> None:
    with api(standin, standin.admin_token()) as client:
        answer = client.post("/v2/actions/targets", json=body)
        assert answer.status_code == 400
        assert answer.json()["code"] == 3


def test_executions(standin: ZitadelStandIn) -> None:
    with api(standin, standin.admin_token()) as client:
        target = client.post(
            "/v2/actions/targets",
            json={"name": "t", "endpoint": "https://a/e", "restAsync": {}},
        ).json()["id"]
        condition = {"event": {"event": "user.deactivated"}}
        answer = client.put(
            "/v2/actions/executions", json={"condition": condition, "targets": [target]}
        )
        assert answer.status_code == 200
        assert "setDate" in answer.json()
        client.put(
            "/v2/actions/executions",
            json={"condition": {"event": {"group": "user"}}, "targets": [target]},
        )
        client.put(
            "/v2/actions/executions",
            json={"condition": {"event": {"all": True}}, "targets": [target]},
        )
        listed = client.post("/v2/actions/executions/search", json={}).json()["executions"]
        assert [e["condition"] for e in listed] == [
            condition,
            {"event": {"group": "user"}},
            {"event": {"all": True}},
        ]
        assert listed[0]["targets"] == [target]
        wanted = client.post(
            "/v2/actions/executions/search",
            json={"filters": [{"inConditionsFilter": {"conditions": [condition]}}]},
        ).json()["executions"]
        assert len(wanted) == 1
        unknown = client.put(
            "/v2/actions/executions", json={"condition": condition, "targets": ["404"]}
        )
        assert unknown.status_code == 404
        bad = client.put(
            "/v2/actions/executions",
            json={"condition": {"request": {"all": True}}, "targets": [target]},
        )
        assert bad.status_code == 400
        client.put("/v2/actions/executions", json={"condition": condition, "targets": []})
        client.delete(f"/v2/actions/targets/{target}")  # leaves every execution it was in
        assert client.post("/v2/actions/executions/search", json={}).json()["executions"] == []


def test_events_are_signed_and_shaped_as_zitadels(
    standin: ZitadelStandIn, project: StandInProject, receiver: Receiver
) -> None:
    user = project.user("alice", roles=["reader"])
    with api(standin, standin.admin_token()) as client:
        created = client.post(
            "/v2/actions/targets",
            json={"name": "api", "endpoint": receiver.url, "restAsync": {}},
        ).json()
        client.put(
            "/v2/actions/executions",
            json={"condition": {"event": {"group": "user"}}, "targets": [created["id"]]},
        )
    standin.deactivate_user(user)
    assert standin.wait_for_deliveries()
    [(headers, body)] = receiver.received
    assert headers["content-type"] == "application/json"
    verify(created["signingKey"], headers, body)
    event = json.loads(body)
    assert event["event_type"] == "user.deactivated"
    assert event["aggregateID"] == user.id
    assert event["instanceID"] == standin.instance_id
    assert event["created_at"].endswith("Z")
    [delivery] = standin.deliveries
    assert (delivery.status, delivery.error) == (200, None)


def test_delivery_is_asynchronous(
    standin: ZitadelStandIn, project: StandInProject, receiver: Receiver
) -> None:
    target = standin.add_target(receiver.url)
    standin.set_execution([target], event="user.locked")
    user = project.user("alice")
    receiver.gate.clear()  # the target holds every call
    standin.lock_user(user)  # returns while the call waits
    assert standin.events[-1].event_type == "user.locked"
    assert not standin.wait_for_deliveries(timeout=0.05)
    receiver.gate.set()
    assert standin.wait_for_deliveries()
    assert [b["event_type"] for b in receiver.bodies()] == ["user.locked"]


def test_at_most_once(standin: ZitadelStandIn, project: StandInProject, receiver: Receiver) -> None:
    receiver.status = 500
    failing = standin.add_target(receiver.url, name="failing")
    unreachable = standin.add_target("http://127.0.0.1:9/nobody", name="unreachable", timeout=2)
    standin.set_execution([failing, unreachable], event="user.removed")
    standin.remove_user(project.user("alice"))
    assert standin.wait_for_deliveries()
    assert len(receiver.received) == 1  # no retry
    outcomes = {d.target_id: (d.status, d.error) for d in standin.deliveries}
    assert outcomes[failing.id] == (500, None)
    assert outcomes[unreachable.id][0] is None
    assert outcomes[unreachable.id][1]


def test_only_the_best_matching_execution_runs(
    standin: ZitadelStandIn, project: StandInProject
) -> None:
    receivers = {name: Receiver() for name in ("exact", "human", "user", "all")}
    routes = [
        Route(f"/{name}", found.endpoint, methods=["POST"]) for name, found in receivers.items()
    ]
    with LoopbackServer(Starlette(routes=routes)) as url:
        targets = {name: standin.add_target(f"{url}/{name}", name=name) for name in receivers}
        standin.set_execution([targets["exact"]], event="user.deactivated")
        standin.set_execution([targets["human"]], group="user.human")
        standin.set_execution([targets["user"]], group="user")
        standin.set_execution([targets["all"]])
        user = project.user("alice")
        session = standin.session_id(project.token("alice"))
        assert session is not None
        standin.deactivate_user(user)
        standin.sign_out(user)
        standin.lock_user(user)
        standin.terminate_session(session)
        assert standin.wait_for_deliveries()
        got = {name: [b["event_type"] for b in found.bodies()] for name, found in receivers.items()}
    assert got["exact"] == ["user.deactivated"]
    assert got["human"] == ["user.human.signed.out"]
    assert got["user"] == ["user.grant.added", "user.locked"]  # by event type, not aggregate
    assert sorted(got["all"]) == ["oidc_session.added", "session.terminated"]
    assert "user.grant.added" not in got["all"]  # the user group took it


@pytest.mark.parametrize("quirk", ["base64", "empty"])
def test_payload_quirks_of_released_versions(
    receiver: Receiver, quirk: Any, clock: FakeClock
) -> None:
    standin = ZitadelStandIn(event_payload=quirk)
    try:
        project = StandInProject(standin)
        standin.set_execution([standin.add_target(receiver.url)], event="user.removed")
        standin.remove_user(project.user("alice"))
        assert standin.wait_for_deliveries()
        payload = receiver.bodies()[0]["event_payload"]
        if quirk == "base64":
            assert json.loads(base64.b64decode(payload)) == {"userName": "alice"}
        else:
            assert payload == {}
        project.close()
    finally:
        standin.close()


def test_jwt_payload_type(
    standin: ZitadelStandIn, project: StandInProject, receiver: Receiver
) -> None:
    target = standin.add_target(receiver.url, payload_type="PAYLOAD_TYPE_JWT")
    standin.set_execution([target], event="oidc_session.access_token.revoked")
    token = project.token("alice")
    standin.revoke(token)
    assert standin.wait_for_deliveries()
    [(headers, body)] = receiver.received
    assert headers["content-type"] == "application/jwt"
    verify(target.signing_key, headers, body)  # ZITADEL signs the JWS with the target's key too
    keys = jwt.PyJWKClient(standin.issuer + "/oauth/v2/keys")
    compact = body.decode()
    assert jwt.get_unverified_header(compact)["typ"] == "JWT"
    claims = jwt.decode(compact, keys.get_signing_key_from_jwt(compact).key, algorithms=["RS256"])
    info = standin.token_info(token)
    assert info is not None
    assert info.oidc_session is not None
    assert claims["aggregateID"] == info.oidc_session.id
    assert claims["event_type"] == "oidc_session.access_token.revoked"
    assert "exp" not in claims


def test_old_events_are_dropped(receiver: Receiver, clock: FakeClock) -> None:
    standin = ZitadelStandIn(clock=clock, max_event_age=60)
    try:
        project = StandInProject(standin)
        standin.set_execution([standin.add_target(receiver.url)], event="user.deactivated")
        receiver.gate.clear()
        first, second = project.user("alice"), project.user("bob")
        standin.deactivate_user(first)
        assert receiver.arrived.wait(10)  # the worker waits on this call
        standin.deactivate_user(second)
        clock.advance(61)  # before the second one leaves
        receiver.gate.set()
        assert standin.wait_for_deliveries()
        assert [b["aggregateID"] for b in receiver.bodies()] == [first.id]
        dropped = [d for d in standin.deliveries if d.status is None]
        assert [d.event.aggregate_id for d in dropped] == [second.id]
        project.close()
    finally:
        standin.close()


def test_the_zitadel_events_fixture(
    zitadel_events: StandInEvents, zitadel_project: StandInProject, receiver: Receiver
) -> None:
    assert os.environ["ZITADEL_EVENTS_SIGNING_KEY"] == zitadel_events.signing_key
    alice = zitadel_project.user("alice")
    zitadel_project.standin.deactivate_user(alice)  # before send_to: goes nowhere
    zitadel_events.send_to(receiver.url)
    token = zitadel_project.token("alice")
    zitadel_project.standin.revoke(token)
    assert zitadel_events.wait()
    assert [body["event_type"] for body in receiver.bodies()] == [
        "oidc_session.added",
        "oidc_session.access_token.revoked",
    ]
    for headers, body in receiver.received:
        verify(zitadel_events.signing_key, headers, body)


def test_several_event_targets_after_one_was_deleted(standin: ZitadelStandIn) -> None:
    first = StandInEvents(standin)
    second = StandInEvents(standin)
    standin.actions.delete_target(first.target.id)
    third = StandInEvents(standin)  # never the name of one still there
    assert len({second.target.name, third.target.name}) == 2
    assert second.signing_key != third.signing_key


def test_zitadel_events_sets_the_key_after_zitadel_env(
    zitadel_events: StandInEvents, zitadel_env: dict[str, str]
) -> None:
    """Named first, set up after ``zitadel_env``: nothing it does removes the key."""
    assert os.environ["ZITADEL_EVENTS_SIGNING_KEY"] == zitadel_events.signing_key
    assert os.environ["ZITADEL_ISSUER"] == zitadel_env["ZITADEL_ISSUER"]
