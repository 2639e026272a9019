"""Serving an ASGI app on a real loopback port, in a background thread.

Tests that cross the network use this: a real socket on 127.0.0.1 and an ephemeral port,
so connection pooling, HTTP framing and timeouts are exercised as in production.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any, Literal

HOST = "127.0.0.1"


class LoopbackServer:
    """``with LoopbackServer(app) as url:`` serves ``app`` until the block ends."""

    def __init__(
        self, app: Any, *, port: int = 0, lifespan: Literal["auto", "on", "off"] = "auto"
    ) -> None:
        self.app = app
        self._lifespan = lifespan
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, port))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        try:
            import uvicorn
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "serving on a port needs uvicorn: pip install 'fastapi-zitadel[testing]'"
            ) from exc
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan=self._lifespan,
            access_log=False,
            timeout_graceful_shutdown=1,  # tests stop servers mid-fault; never hang on it
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
