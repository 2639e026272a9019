"""The stand-in and the library's event receiver agree on every shape ZITADEL has sent: each
payload quirk of released versions, the JWT payload type, either ``jti`` delimiter. One API
in local mode (nothing but an event can make it refuse a JWT it verified), events from the
stand-in over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import pytest

from example_app.app import create_app
from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.defaults import set_default_zitadel
from fastapi_zitadel.testing import LoopbackServer, StandInEvents, StandInProject, ZitadelStandIn

pytestmark = pytest.mark.loopback


@dataclass
class Api:
    standin: ZitadelStandIn
    project: StandInProject
    events: StandInEvents
    url: str

    def token(self, name: str) -> str:
        return self.project.token(name, roles=["reader"], jwt=True)

    def status(self, token: str) -> int:
        answer = httpx.get(self.url + "/items", headers={"Authorization": f"Bearer {token}"})
        return answer.status_code


@pytest.fixture
def served() -> Iterator[Callable[..., Api]]:
    """``served(**stand-in options, payload_type=...)``: the stand-in and an API taking its
    events, both on loopback ports."""
    stack: list[Any] = []

    def make(payload_type: str = "PAYLOAD_TYPE_JSON", **options: Any) -> Api:
        standin = ZitadelStandIn(**options)
        server = standin.serve()
        server.start()
        project = StandInProject(standin)
        events = StandInEvents(standin, payload_type=payload_type)
        zitadel = ZitadelIntrospection(
            standin.issuer,
            validation="local",
            audience=project.project.id,
            project_id=project.project.id,
            events_signing_key=events.signing_key,
        )
        api = LoopbackServer(create_app(zitadel))
        url = api.start()
        stack.extend([server, standin, project, api])
        events.send_to(url + "/zitadel/events")
        return Api(standin, project, events, url)

    yield make
    for item in reversed(stack):
        (item.stop if isinstance(item, LoopbackServer) else item.close)()
    set_default_zitadel(None)


def refused_after(api: Api, change: Callable[[], None], token: str, bystander: str) -> bool:
    """Whether ``token`` is refused once ``change``'s events were delivered (both tokens
    served, so cached, before)."""
    assert api.status(token) == 200
    assert api.status(bystander) == 200
    change()
    assert api.events.wait()
    assert all(d.status == 200 for d in api.standin.deliveries), api.standin.deliveries
    assert api.status(bystander) == 200
    return api.status(token) == 401


Quirk = Literal["object", "base64", "empty"]


@pytest.mark.parametrize("quirk", ["object", "base64", "empty"])
def test_user_events_in_every_payload_shape(served: Callable[..., Api], quirk: Quirk) -> None:
    api = served(event_payload=quirk)
    token, bystander = api.token("ann"), api.token("ben")
    user = api.project.user("ann")
    assert refused_after(api, lambda: api.standin.deactivate_user(user), token, bystander)


@pytest.mark.parametrize("quirk", ["object", "base64"])
def test_a_terminated_session_is_mapped_through_oidc_session_added(
    served: Callable[..., Api], quirk: Quirk
) -> None:
    api = served(event_payload=quirk)
    token = api.token("ann")
    other_session = api.token("ann")  # the same user, another login
    session = api.standin.session_id(token)
    assert session is not None
    assert refused_after(api, lambda: api.standin.terminate_session(session), token, other_session)


def test_v4_1_0s_empty_payload_cannot_map_a_terminated_session(
    served: Callable[..., Api],
) -> None:
    """v4.1.0 sends ``{}`` for ``oidc_session.added`` too: nothing tells the API which OIDC
    sessions a login session has, and ``cache_ttl`` stays the bound (documented)."""
    api = served(event_payload="empty")
    token, bystander = api.token("ann"), api.token("ben")
    session = api.standin.session_id(token)
    assert session is not None
    assert not refused_after(api, lambda: api.standin.terminate_session(session), token, bystander)


@pytest.mark.parametrize("delimiter", [".", "-"])
def test_revocation_with_either_jti_delimiter(
    served: Callable[..., Api], delimiter: Literal[".", "-"]
) -> None:
    api = served(jti_delimiter=delimiter)
    token = api.token("ann")
    same_user = api.token("ann")
    assert refused_after(api, lambda: api.standin.revoke(token), token, same_user)


def test_sign_out_reaches_the_api(served: Callable[..., Api]) -> None:
    api = served()
    token, bystander = api.token("ann"), api.token("ben")
    user = api.project.user("ann")
    assert refused_after(api, lambda: api.standin.sign_out(user), token, bystander)


def test_jwt_payload_type(served: Callable[..., Api]) -> None:
    """The body a compact JWS signed with the stand-in's web key, checked against its JWKS."""
    api = served(payload_type="PAYLOAD_TYPE_JWT")
    token, bystander = api.token("ann"), api.token("ben")
    user = api.project.user("ann")
    assert refused_after(api, lambda: api.standin.lock_user(user), token, bystander)


def test_a_forged_key_is_refused_and_changes_nothing(served: Callable[..., Api]) -> None:
    api = served()
    token, bystander = api.token("ann"), api.token("ben")
    api.events.target.signing_key = "not-the-key-the-api-knows"
    user = api.project.user("ann")
    api.standin.deactivate_user(user)
    assert api.events.wait()
    answers = [d.status for d in api.standin.deliveries if d.event.event_type == "user.deactivated"]
    assert answers == [401]
    assert api.status(token) == 200  # still cached: the forged event was not applied
    assert api.status(bystander) == 200
