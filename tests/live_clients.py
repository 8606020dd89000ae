"""Clients of a real MoodLens server over HTTP and Socket.IO: teachers, students, event probes.

Used by the tests that run real server processes (one, or several behind
nginx). Every client can carry extra headers (``X-Forwarded-For`` steers
nginx's ``ip_hash`` in the scale-out tests).
"""
from __future__ import annotations

import queue
import re
import threading
import time

import requests
import socketio
import websocket

CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
PASSWORD = "correct horse battery"


class Web:
    """A browser-like HTTP session (cookies, CSRF tokens) against ``base``."""

    def __init__(self, base: str, headers: dict | None = None):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.headers.update(headers or {})
        self.http.headers["Connection"] = "close"  # no pooled sockets left open when a test forgets the session
        self.headers = dict(headers or {})

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.http.post(self.base + path, timeout=kw.pop("timeout", 30), allow_redirects=False, **kw)

    def token(self, page: str) -> str:
        resp = self.get(page)
        found = CSRF_FIELD.search(resp.text)
        assert found, f"no CSRF token on {page} ({resp.status_code})"
        return found.group(1)

    def form(self, page: str, data: dict, action: str | None = None) -> requests.Response:
        """Submit the form of ``page`` (to ``action``, default the page itself) with its CSRF token."""
        return self.post(action or page, data={**data, "csrf_token": self.token(page)})

    def cookie_header(self) -> dict:
        jar = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        return {**self.headers, "Cookie": jar} if jar else dict(self.headers)


def teacher(base: str, email: str = "ann@example.org", name: str = "Ann", class_name: str = "Biology",
            headers: dict | None = None) -> tuple[Web, str]:
    """Register a teacher and create a class (its first session runs); returns (web session, class code)."""
    web = Web(base, headers)
    resp = web.form("/register", {"name": name, "email": email, "password": PASSWORD, "confirm": PASSWORD})
    assert resp.status_code == 302, resp.text[:500]
    resp = web.form("/classes", {"name": class_name})
    assert resp.status_code == 302, resp.text[:500]
    return web, resp.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def student(base: str, code: str, name: str = "Sam", headers: dict | None = None) -> Web:
    """Join class ``code`` with consent; returns the student's web session."""
    web = Web(base, headers)
    resp = web.form(f"/join/{code}", {"display_name": name, "consent": "y"})
    assert resp.status_code == 302, resp.text[:500]
    return web


class Probe:
    """A python-socketio client that queues every event it receives, for tests to wait on."""

    def __init__(self, base: str, headers: dict | None = None, namespaces=("/",), auth=None,
                 transports=("websocket",), reconnection: bool = False, tag: str | None = None):
        """``tag``: added to the Socket.IO URL's query (``?tag=...``), to find this client in nginx's log."""
        self.base, self.headers, self.auth = base, dict(headers or {}), auth
        self.url = base.rstrip("/") + (f"/?tag={tag}" if tag else "")
        self.namespaces, self.transports = list(namespaces), list(transports)
        self.events: queue.Queue = queue.Queue()
        self.http = requests.Session()  # ours, so that close() can release its sockets
        # Cookies go in the session's jar: engine.io's client consumes a "Cookie" header on the first
        # connect (it deletes it from the dict), so a reconnect would arrive without the Flask session.
        cookie = next((self.headers.pop(k) for k in list(self.headers) if k.lower() == "cookie"), "")
        for part in filter(None, (p.strip() for p in cookie.split(";"))):
            name, _, value = part.partition("=")
            self.http.cookies.set(name, value)
        # engine.io's client sends ``headers`` with the handshake only; the session sends them with every request.
        self.http.headers.update(self.headers)
        # Every WebSocket the client opens, so that close() releases them all: when the server drops a
        # connection, engine.io's client leaves its socket open and a reconnect replaces it without closing it.
        self.websockets: list[websocket.WebSocket] = []
        self.sio = socketio.Client(reconnection=reconnection, reconnection_delay=0.2, reconnection_delay_max=1,
                                   randomization_factor=0, handle_sigint=False, http_session=self.http,
                                   websocket_extra_options={"class_": self._new_websocket})
        self.connects = 0
        self.disconnects = 0
        self.connect_errors: list = []  # the server's reasons for refusing a connection
        for ns in self.namespaces:
            self.sio.on("*", lambda event, *args, _ns=ns: self._any(event, _ns, *args), namespace=ns)
            self.sio.on("connect", self._connected, namespace=ns)
            self.sio.on("disconnect", self._disconnected, namespace=ns)
            self.sio.on("connect_error", self._refused, namespace=ns)

    def _new_websocket(self, *args, **kwargs) -> websocket.WebSocket:
        """``websocket.create_connection``'s ``class_``: a plain WebSocket, remembered."""
        ws = websocket.WebSocket(*args, **kwargs)
        self.websockets.append(ws)
        return ws

    def _any(self, event, namespace, *args):
        self.events.put((event, namespace, args[0] if len(args) == 1 else args))

    def _connected(self):
        self.connects += 1
        self.events.put(("__connect__", None, None))

    def _refused(self, data=None):
        self.connect_errors.append(data.get("message") if isinstance(data, dict) else data)

    def _disconnected(self, *_):
        self.disconnects += 1
        self.events.put(("__disconnect__", None, None))

    def connect(self, wait_timeout: float = 10) -> "Probe":
        """Connect; a refusal raises socketio's ConnectionError (the server's reason is in ``connect_errors``)."""
        self.sio.connect(self.url, headers=self.headers, namespaces=self.namespaces, auth=self.auth,
                         transports=self.transports, wait_timeout=wait_timeout)
        return self

    def close(self) -> None:
        """Disconnect and release the sockets (the client leaves them open when the server dropped it)."""
        try:
            self.sio.disconnect()
        except Exception:  # already gone with its server
            pass
        self.sio.shutdown()
        for ws in self.websockets:  # the last connection's, and those of connections dropped before a reconnect
            try:
                ws.shutdown()  # close() does nothing once the server has dropped the connection
            except Exception:
                pass
        self.http.close()

    def emit(self, event: str, data=None, namespace: str = "/") -> None:
        self.sio.emit(event, data, namespace=namespace)

    def call(self, event: str, data=None, namespace: str = "/", timeout: float = 10):
        return self.sio.call(event, data, namespace=namespace, timeout=timeout)

    def wait_for(self, event: str, predicate=lambda msg: True, timeout: float = 15.0):
        """The first ``event`` (from now on, skipping others) whose payload satisfies ``predicate``; None at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                name, _ns, msg = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if name == event and predicate(msg):
                return msg

    def wait_disconnected(self, timeout: float = 15.0) -> bool:
        """True once the connection is gone (polled: the client's own disconnect callback may not run)."""
        deadline = time.monotonic() + timeout
        while self.sio.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.sio.connected

    def drain(self) -> list:
        """Every event queued so far, as (name, namespace, payload)."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out


class Streamer(threading.Thread):
    """Streams frames over a Probe's connection as the page does: one in flight, next on the answer."""

    def __init__(self, probe: Probe, frames: list[bytes], fps: float = 10.0, answer_timeout: float = 1.5):
        super().__init__(daemon=True)
        self.probe, self.frames, self.interval, self.answer_timeout = probe, frames, 1.0 / fps, answer_timeout
        self.stop_event = threading.Event()
        self.answered = 0
        self.errors: list = []
        self._answer = threading.Event()
        self._expect = -1
        self.last_faces = None
        probe.sio.on("faces", self._on_faces)
        probe.sio.on("frame_error", self._on_error)

    def _on_faces(self, msg):
        self.last_faces = msg
        if msg.get("seq") == self._expect:
            self.answered += 1
            self._answer.set()

    def _on_error(self, msg):
        self.errors.append(msg)
        self._answer.set()

    def run(self) -> None:
        seq = 0
        while not self.stop_event.is_set():
            if self.probe.sio.connected:
                self._answer.clear()
                self._expect = seq
                try:
                    self.probe.emit("frame", {"seq": seq, "image": self.frames[seq % len(self.frames)]})
                except socketio.exceptions.SocketIOError:
                    pass
                else:
                    self._answer.wait(self.answer_timeout)
                seq += 1
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        if self.ident is not None:
            self.join(5)


class Paced:
    """A client that streams as the page does: one frame in flight, the next after the answer.

    At most ``fps`` frames per second (0: the next frame as soon as the answer comes).
    ``run`` records each round trip in ``latencies`` (ms).
    """

    def __init__(self, url: str, frames: list[bytes], fps: float):
        self.probe = Probe(url).connect()
        self.frames, self.fps = frames, fps
        self.latencies: list[float] = []
        self._answer = threading.Event()
        self._expect = -1
        self.probe.sio.on("faces", self._on_faces)
        self.probe.sio.on("frame_error", lambda msg: self._answer.set())

    def _on_faces(self, msg):
        if msg.get("seq") == self._expect:
            self._answer.set()

    def run(self, seconds: float, record: bool = True) -> None:
        deadline = time.monotonic() + seconds
        seq = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            self._answer.clear()
            self._expect = seq
            self.probe.emit("frame", {"seq": seq, "image": self.frames[seq % len(self.frames)]})
            if not self._answer.wait(10):
                raise AssertionError("a frame of a well-behaved client was not answered within 10 s")
            if record:
                self.latencies.append((time.monotonic() - started) * 1000)
            seq += 1
            if self.fps:
                time.sleep(max(0.0, 1 / self.fps - (time.monotonic() - started)))


class Flooder:
    """A client that sends ``fps`` frames per second without waiting for answers; keeps every answer."""

    def __init__(self, url: str, frames: list[bytes], fps: float):
        self.probe = Probe(url).connect()
        self.frames, self.fps = frames, fps
        self.sent = 0
        self.flooding_seconds = 0.0
        self.answers: list[tuple[float, dict]] = []
        self.stopped_at: float | None = None
        self.probe.sio.on("faces", lambda msg: self.answers.append((time.monotonic(), msg)))

    def run(self, seconds: float) -> None:
        started = time.monotonic()
        deadline = started + seconds
        interval = 1 / self.fps
        next_at = started
        while time.monotonic() < deadline:
            self.probe.emit("frame", {"seq": self.sent, "image": self.frames[self.sent % len(self.frames)]})
            self.sent += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        self.stopped_at = time.monotonic()
        self.flooding_seconds += self.stopped_at - started


def beside(normal: Paced, neighbour_run, seconds: float) -> list[float]:
    """``normal``'s round trips (ms) while ``neighbour_run(seconds)`` runs in another thread."""
    normal.latencies = []
    t = threading.Thread(target=neighbour_run, args=(seconds,))
    t.start()
    time.sleep(0.5)  # let the neighbour get going
    normal.run(seconds - 1.0)
    t.join(seconds + 30)
    return list(normal.latencies)
