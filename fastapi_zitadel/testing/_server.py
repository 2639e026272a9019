"""Serving an ASGI app on a real loopback port, in a background thread.

Tests that cross the network use this: a real socket on 127.0.0.1 and an ephemeral port,
so connection pooling, HTTP framing and timeouts are exercised as in production.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from typing import Any, Literal

HOST = "127.0.0.1"
# In the words of the library's install hints (not on PyPI yet: a clone or a wheel).
NEEDS_UVICORN = (
    "serving on a port needs uvicorn, the 'testing' extra: pip install '.[testing]' in a clone "
    "of fastapi-zitadel, or pip install 'fastapi_zitadel-<version>-py3-none-any.whl[testing]' "
    "with a wheel built from one (not on PyPI yet; then: pip install 'fastapi-zitadel[testing]')"
)


def uvicorn_missing() -> bool:
    """Whether serving on a port is impossible here (the ``testing`` extra is missing)."""
    try:
        import uvicorn  # noqa: F401 - imported: a broken install counts as missing
    except ImportError:
        return True
    return False


# uvicorn logs through two process-wide loggers: beside an app served by uvicorn in the same
# process (the example with its embedded stand-in), the stand-in's access and start/stop lines
# would be printed among the app's, and "Shutting down" twice. Below WARNING, records from
# our servers' threads are dropped (by this filter, added to both loggers on start).
_THREAD_PREFIX = "fastapi-zitadel-loopback"


def _from_elsewhere(record: logging.LogRecord) -> bool:
    thread = record.threadName or ""
    return record.levelno >= logging.WARNING or not thread.startswith(_THREAD_PREFIX)


class PortInUse(OSError):
    """The port to listen on is taken (by another program, or a stand-in still running)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return (
            f"port {self.port} on {self.host} is already in use: stop the program listening "
            "there, or choose another port with --port (--port 0 picks a free one)"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening); ``PortInUse`` when taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    return sock


def base_url(host: str, port: int) -> str:
    """``http://host:port`` as a browser can open it (a wildcard address as 127.0.0.1)."""
    shown = HOST if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - read, not bound
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class LoopbackServer:
    """``with LoopbackServer(app) as url:`` serves ``app`` until the block ends."""

    def __init__(
        self,
        app: Any,
        *,
        port: int = 0,
        lifespan: Literal["auto", "on", "off"] = "auto",
        sock: socket.socket | None = None,
    ) -> None:
        """Binds 127.0.0.1:``port`` at once (``PortInUse`` when taken), or serves on ``sock``,
        a socket bound already (see ``bind_socket``)."""
        self.app = app
        self._lifespan = lifespan
        self._socket = sock if sock is not None else bind_socket(HOST, port)
        host, self.port = self._socket.getsockname()[:2]
        self.url = base_url(host, self.port)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        try:
            import uvicorn
        except ImportError:
            raise RuntimeError(NEEDS_UVICORN) from None
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan=self._lifespan,
            access_log=False,
            timeout_graceful_shutdown=1,  # tests stop servers mid-fault; never hang on it
        )
        self._server = uvicorn.Server(config)
        for name in ("uvicorn.error", "uvicorn.access"):
            logger = logging.getLogger(name)
            if _from_elsewhere not in logger.filters:
                logger.addFilter(_from_elsewhere)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"{_THREAD_PREFIX}-{self.port}",
            daemon=True,
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

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
