"""pytest fixtures for testing APIs protected by fastapi-zitadel, loaded automatically when
the package is installed (``-p no:fastapi_zitadel`` turns them off).

    def test_items(zitadel_token, zitadel_env):   # zitadel_env: ZITADEL_* point at the stand-in
        token = zitadel_token("bob", roles=["reader"])
        ...

Every fixture works under pytest-asyncio's strict mode (``@pytest.mark.asyncio``), its auto
mode, and anyio (``@pytest.mark.anyio``); see docs/testing.md.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from fastapi_zitadel import ZitadelIntrospection

from ._project import StandInEvents, StandInProject
from ._standin import ZitadelStandIn


@pytest.fixture
def zitadel_standin() -> Iterator[ZitadelStandIn]:
    """A ZITADEL stand-in served on 127.0.0.1 at a free port for the test."""
    standin = ZitadelStandIn()
    with standin.serve():
        yield standin
    standin.close()  # stops sending events


@pytest.fixture
def zitadel_project(zitadel_standin: ZitadelStandIn, tmp_path: Path) -> StandInProject:
    """An organization, a project and its API application (key file in ``tmp_path``)."""
    return StandInProject(zitadel_standin, key_dir=tmp_path)


@pytest.fixture
def zitadel_token(zitadel_project: StandInProject) -> Callable[..., str]:
    """``zitadel_token(username="alice", roles=(), scopes=(...), lifetime=3600, jwt=False)``:
    an opaque access token, or with ``jwt=True`` a JWT access token."""
    return zitadel_project.token


@pytest.fixture
def zitadel_env(zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Sets ``ZITADEL_*`` so that ``ZitadelIntrospection.from_env()`` uses the stand-in, and
    only the stand-in: every other ``ZITADEL_*`` variable of the shell running the tests (a
    developer's real ``ZITADEL_VALIDATION``, ``ZITADEL_KEY``, ``ZITADEL_REDIS_URL``...) is
    removed for the test, so it passes on a laptop as it does in CI."""
    env = zitadel_project.env
    for name in [name for name in os.environ if name.upper().startswith("ZITADEL_")]:
        if name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def zitadel_events(
    zitadel_env: dict[str, str], zitadel_standin: ZitadelStandIn, monkeypatch: pytest.MonkeyPatch
) -> StandInEvents:
    """The stand-in sends ZITADEL's events (Actions v2) to your API once you call
    ``zitadel_events.send_to(url)``; sets ``ZITADEL_*`` as ``zitadel_env`` does and
    ``ZITADEL_EVENTS_SIGNING_KEY`` to the target's key (also ``zitadel_events.signing_key``).
    ``zitadel_events.wait()`` waits for deliveries."""
    # After zitadel_env (a dependency), whatever order a test names them in: it leaves only
    # its own ZITADEL_* variables, and this one is added to them.
    events = StandInEvents(zitadel_standin)
    for name, value in events.env.items():
        monkeypatch.setenv(name, value)
    return events


@pytest.fixture
def zitadel_introspection(request: pytest.FixtureRequest) -> ZitadelIntrospection:
    """A ``ZitadelIntrospection`` for the stand-in project, opened and closed in the test's
    own event loop, whichever plugin runs it: pytest-asyncio in strict mode
    (``@pytest.mark.asyncio``) or auto mode, or anyio (``@pytest.mark.anyio``)."""
    if "anyio_backend" in request.fixturenames:
        name = "_zitadel_introspection_anyio"
    elif _WITH_PYTEST_ASYNCIO:
        name = "_zitadel_introspection_asyncio"
    else:
        raise pytest.UsageError(
            "zitadel_introspection is opened in an event loop: install pytest-asyncio, or "
            "mark the test with @pytest.mark.anyio"
        )
    return cast(ZitadelIntrospection, request.getfixturevalue(name))


@pytest.fixture(name="_zitadel_introspection_anyio")
async def _introspection_for_anyio(
    zitadel_project: StandInProject,
) -> AsyncIterator[ZitadelIntrospection]:
    """Run by anyio's plugin, which takes the async fixtures of tests using ``anyio_backend``."""
    async with zitadel_project.introspection() as zitadel:
        yield zitadel


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - depends on the environment
    _WITH_PYTEST_ASYNCIO = False
else:
    _WITH_PYTEST_ASYNCIO = True

    @pytest_asyncio.fixture(name="_zitadel_introspection_asyncio")
    async def _introspection_for_asyncio(
        zitadel_project: StandInProject,
    ) -> AsyncIterator[ZitadelIntrospection]:
        """Marked for pytest-asyncio, so that its strict mode runs it too (strict mode leaves
        async fixtures without the mark alone)."""
        async with zitadel_project.introspection() as zitadel:
            yield zitadel


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "zitadel: tests that use the ZITADEL stand-in")
