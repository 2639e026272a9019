"""A small TCP proxy for fault injection: forward, delay, reset, or accept and never answer.

Runs in threads with plain sockets, so it misbehaves exactly like a network would, whatever
the code under test does with its event loop.

Beyond the modes for new connections, two controls act on traffic, decided by the test rather
than by a timer:

* ``hold()`` keeps what clients send (to the server) at the proxy until ``release()``, on the
  open connections, on new ones, or both; ``held`` counts the chunks waiting, so a test can
  wait until a given request has reached the proxy;
* ``blackhole_open()`` silently drops everything, both ways, on the connections open now (no
  FIN, no RST: a middlebox that forgot them), while new connections work as before.
"""

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Literal

Mode = Literal["forward", "delay", "reset", "blackhole"]


class _Link:
    """One proxied connection: whether its client's data is held, whether it is dropped."""

    def __init__(self, *, held: bool) -> None:
        self.gate = threading.Event()
        if not held:
            self.gate.set()
        self.blackholed = False


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self.delay = 0.0
        self.accepted = 0
        self.open_connections = 0
        self.held = 0
        self._hold_new = False
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_url = f"redis://127.0.0.1:{self.port}/0"
        self._stopped = threading.Event()
        self._held: list[socket.socket] = []
        self._live: dict[socket.socket, _Link] = {}
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> "TcpProxy":
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for held in self._held:
            held.close()
        with self._lock:
            live = list(self._live.items())
        for connection, link in live:
            link.gate.set()
            _reset(connection)
        self._thread.join(timeout=5)

    def set_mode(self, mode: Mode, delay: float = 0.0) -> None:
        """Switch behaviour for new connections and cut the open ones (pooled connections
        would otherwise carry on as before)."""
        self.mode, self.delay = mode, delay
        with self._lock:
            live = list(self._live)
        for connection in live:
            _reset(connection)

    def hold(self, *, open_connections: bool = True, new_connections: bool = True) -> None:
        """Keep what clients send at the proxy until ``release()``: on the connections open
        now, on those accepted from now on, or both. Answers already sent still arrive."""
        with self._lock:
            self._hold_new = new_connections
            if open_connections:
                for link in self._live.values():
                    link.gate.clear()

    def release(self) -> None:
        """Let everything held through, in order, and stop holding."""
        with self._lock:
            self._hold_new = False
            for link in self._live.values():
                link.gate.set()

    def blackhole_open(self) -> int:
        """Drop everything on the connections open now, both ways, without closing them.

        Returns how many were open. New connections are served as the mode says.
        """
        with self._lock:
            for link in self._live.values():
                link.blackholed = True
            return len(self._live)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            mode = self.mode
            if mode == "reset":
                _reset(client)
            elif mode == "blackhole":
                self._held.append(client)  # accepted, read from by nobody, never answered
            else:
                delay = self.delay if mode == "delay" else 0.0
                threading.Thread(target=self._serve, args=(client, delay), daemon=True).start()

    def _serve(self, client: socket.socket, delay: float) -> None:
        with self._lock:
            self.open_connections += 1
            link = _Link(held=self._hold_new)
            self._live[client] = link
        try:
            if delay:
                time.sleep(delay)
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            with self._lock:
                self.open_connections -= 1
                self._live.pop(client, None)
            return
        done = threading.Event()
        threading.Thread(
            target=self._pipe, args=(client, upstream, done, link, True), daemon=True
        ).start()
        threading.Thread(
            target=self._pipe, args=(upstream, client, done, link, False), daemon=True
        ).start()
        done.wait()
        for end in (client, upstream):
            # shutdown() first: close() alone, while the other pipe thread still blocks in
            # recv() on the socket, sends nothing, and the peer would wait for an answer that
            # never comes instead of seeing the connection end (a drop would look like a hang).
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                end.close()
        with self._lock:
            self.open_connections -= 1
            self._live.pop(client, None)

    def _pipe(
        self,
        source: socket.socket,
        sink: socket.socket,
        done: threading.Event,
        link: _Link,
        from_client: bool,
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if from_client and not link.gate.is_set():
                    with self._lock:
                        self.held += 1
                    link.gate.wait()
                    with self._lock:
                        self.held -= 1
                if link.blackholed:
                    continue  # read and dropped: the peer sees neither an answer nor an end
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            done.set()


def _reset(connection: socket.socket) -> None:
    """Close with an RST (SO_LINGER with a zero timeout), as a crashed peer or middlebox does."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
