"""What the eventlet mode needs of its own: WebSocket frames unmasked off the Python byte loop.

Stopping ``python -m app`` in either mode, and gunicorn, is tested in tests/test_graceful_stop.py.

The flood test (tests/test_flood.py) runs in eventlet mode too: a client flooding frames must not hold the
event loop from a well-behaved one.
"""
from __future__ import annotations

import os
import struct
import warnings

import pytest


@pytest.fixture(scope="module", autouse=True)
def eventlet_imported():
    """eventlet imported (not monkey-patched) without its deprecation notice, as ``python -m app`` imports it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import eventlet  # noqa: F401


def test_unmask_gives_the_bytes_of_eventlets_own_unmasking():
    """Unit: for every length, mask, offset and ``length`` argument, ``unmask`` equals eventlet's ``_apply_mask``."""
    from eventlet.websocket import RFC6455WebSocket

    from app.live.transport import unmask

    reference = RFC6455WebSocket._apply_mask
    for size in [*range(10), 1000, 65537]:
        data = os.urandom(size)
        mask = struct.unpack("!BBBB", os.urandom(4))  # as eventlet reads it from a frame
        for offset in range(6):
            for length in {None, size, size // 2}:
                assert unmask(data, mask, length, offset) == reference(data, mask, length, offset), (size, offset)
        assert unmask(bytearray(data), list(mask)) == reference(data, mask)


class FakeSocket:
    """The client's end as eventlet's connection sees it: what it sends is kept, ``incoming`` is read in chunks."""

    def __init__(self, incoming: bytes = b"", chunk: int = 7000):
        self.incoming, self.chunk, self.sent = incoming, chunk, b""

    def get_socket(self):
        return self

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        data, self.incoming = self.incoming[:min(size, self.chunk)], self.incoming[min(size, self.chunk):]
        return data


def test_the_eventlet_websocket_reads_a_masked_frame_with_the_fast_unmasking():
    """Unit: install() gives an eventlet server a WebSocket whose connections unmask with ``unmask``, and read
    a client's masked frame, arriving in chunks (each unmasked from its own offset), byte for byte."""
    from engineio.async_drivers import eventlet as driver
    from eventlet.websocket import RFC6455WebSocket

    from app.live import transport

    class Server:  # what install() reads of a Flask-SocketIO server
        def __init__(self):
            self.eio = type("Eio", (), {"async_mode": "eventlet", "_async": dict(driver._async)})()

    socketio = type("SocketIO", (), {"server": Server()})()
    assert transport.install(socketio)
    live = socketio.server.eio._async["websocket"]
    assert issubclass(live, driver.WebSocketWSGI) and driver._async["websocket"] is driver.WebSocketWSGI

    payload = os.urandom(100_003)
    client = RFC6455WebSocket(FakeSocket(), {}, client=True)
    frame = client._pack_message(payload, masked=True)  # as a browser sends it: masked, binary
    sock = FakeSocket(frame)
    environ = {"eventlet.input": sock, "HTTP_SEC_WEBSOCKET_VERSION": "13",
               "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}
    ws = live(lambda ws: None, type("Eio", (), {"max_http_buffer_size": 1 << 20})())._handle_hybi_request(environ)
    assert sock.sent.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert ws._apply_mask is transport.unmask
    assert ws.wait() == payload
