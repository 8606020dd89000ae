"""The threading mode's WebSocket: read in chunks that fit a live frame, written one frame at a time (none after
the close frame), closed quietly once the client has gone. The eventlet mode's WebSocket: a client's frames
unmasked in one pass, off the Python byte loop. In every mode: a broken Socket.IO packet, or a binary packet of
more than one attachment, closes its connection with one warning."""
from __future__ import annotations

import functools
import logging
import threading
from collections import deque

import numpy as np
import simple_websocket
from engineio.async_drivers._websocket_wsgi import SimpleWebSocketWSGI
from simple_websocket import ConnectionClosed
from socketio import packet

log = logging.getLogger("moodlens.live.transport")

# simple-websocket reads 4 KiB at a time. A live frame is 20-60 KB, so each took a dozen reads and
# as many passes of the frame parser: a client flooding 300 frames/s cost the server 0.21 of a core
# instead of 0.14 with 64 KiB reads (measured on the 2-core test machine). 64 KiB stays below the
# size at which the allocator maps fresh pages for every read.
RECEIVE_BYTES = 64 * 1024


class OrderedServer(simple_websocket.Server):
    """simple-websocket's server end of a connection, writing one frame at a time and none after its close frame.

    Two threads write to a connection: Engine.IO's writer thread sends the server's messages, and the reader
    thread answers the client's control frames, its close frame above all. simple-websocket lets both check the
    connection, encode and write at once, so a message encoded while the connection was open could reach the
    socket after the reader's answer to the client's close frame. The browser then fails the connection
    ("Data frame received after close" in its console): a ``faces`` answer racing a student who stops sharing,
    for one. One lock per connection covers the check, the encoding and the write on both paths; a message
    that finds the connection closed raises ``ConnectionClosed``, which Engine.IO's writer thread handles.
    """

    def __init__(self, environ, **kwargs):
        self._writing = threading.Lock()  # before the handshake, which answers through _handle_events
        super().__init__(environ, **kwargs)

    def send(self, data):
        with self._writing:
            super().send(data)

    def close(self, reason=None, message=None):
        with self._writing:
            super().close(reason, message)

    def _handle_events(self):
        # The reader thread's handling of what it read, answers included (pongs, the close handshake).
        with self._writing:
            return super()._handle_events()


class LiveWebSocket(SimpleWebSocketWSGI):
    """Engine.IO's threading WebSocket over an ``OrderedServer`` reading ``RECEIVE_BYTES`` per call, closed quietly
    once the client has gone."""

    def __init__(self, handler, server, **kwargs):
        kwargs.setdefault("receive_bytes", RECEIVE_BYTES)
        super().__init__(handler, server, **kwargs)

    def __call__(self, environ, start_response):
        # Engine.IO's own, but with an OrderedServer: its base class names simple_websocket.Server itself.
        self.ws = OrderedServer(environ, **self.server_args)
        ret = self.app(self)
        if self.ws.mode == "gunicorn":
            raise StopIteration()
        if self.ws.mode == "werkzeug":
            raise ConnectionError()
        return ret

    def close(self):
        """Send the close frame, unless the connection ended while this was being decided.

        Engine.IO's writer thread closes the WebSocket when a session ends. If the client leaves at that
        moment, simple-websocket's reader thread closes the socket between the writer's ``connected`` check
        and its send of the close frame. The send then fails with EBADF (or finds the connection closed), and
        unguarded, the writer thread would die with a traceback in the server log. Nobody is left to receive
        the frame, so the failure is logged at debug level only.
        """
        try:
            super().close()
        except (OSError, ConnectionClosed) as exc:
            log.debug("WebSocket already closed when its close frame was sent: %r", exc)


def unmask(data, mask, length=None, offset=0) -> bytes:
    """``data[:length]`` (all of it by default) XORed with the 4-byte ``mask`` starting at mask byte ``offset``.

    The same bytes as eventlet's ``RFC6455WebSocket._apply_mask``, which XORs byte by byte in Python: 12 ms
    for a 30 KB live frame and 0.45 s for one of ``MAX_FRAME_BYTES``, the event loop blocked all along (every
    other client, ``/healthz`` included, waited). One numpy XOR takes a fraction of a millisecond.
    """
    count = len(data) if length is None else length
    if count <= 0:
        return b""
    key = bytes(mask[(offset + i) % 4] for i in range(4))
    payload = np.frombuffer(data, np.uint8, count)
    return (payload ^ np.frombuffer(key * (count // 4 + 1), np.uint8, count)).tobytes()


@functools.cache
def eventlet_websocket() -> type:
    """Engine.IO's eventlet WebSocket, its connections unmasking the client's frames with ``unmask``.

    Built on first use: importing eventlet's modules belongs to the eventlet mode only (after its monkey-patching).
    """
    from engineio.async_drivers.eventlet import WebSocketWSGI
    from eventlet.websocket import RFC6455WebSocket

    class FastUnmaskWebSocket(RFC6455WebSocket):
        """eventlet's RFC 6455 connection, unmasking with ``unmask``."""

        _apply_mask = staticmethod(unmask)

    class LiveEventletWebSocket(WebSocketWSGI):
        """Engine.IO's eventlet WebSocket over a ``FastUnmaskWebSocket`` connection."""

        def _handle_hybi_request(self, environ):
            # eventlet builds the connection at the end of its handshake, naming RFC6455WebSocket itself; the
            # subclass only replaces a static method, so the connection is re-classed rather than the
            # handshake copied.
            ws = super()._handle_hybi_request(environ)
            ws.__class__ = FastUnmaskWebSocket
            return ws

    return LiveEventletWebSocket


def install(socketio) -> bool:
    """Use ``LiveWebSocket`` for a threading-mode server, ``eventlet_websocket()`` for an eventlet one; other
    modes keep their own. True if installed."""
    eio = socketio.server.eio
    if eio._async.get("websocket") is SimpleWebSocketWSGI:
        live = LiveWebSocket
    elif eio.async_mode == "eventlet":
        live = eventlet_websocket()
    else:
        return False
    eio._async = {**eio._async, "websocket": live}  # this server's copy; the driver's table is shared
    return True


class MalformedPacket(ValueError):
    """A Socket.IO packet that breaks the protocol, or announces what no event of this app carries."""


class TooManyAttachments(MalformedPacket):
    """A binary packet announced more attachments than any event of this app carries."""


# Event names the Socket.IO client refuses to emit: python-socketio would run the app's own ``connect`` or
# ``disconnect`` handler for a client that sent one (a forged "lost connection" for a classroom student).
RESERVED_EVENTS = frozenset({"connect", "connect_error", "disconnect", "disconnecting", "newListener",
                             "removeListener"})
CLIENT_PACKETS = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK, packet.BINARY_EVENT,
                            packet.BINARY_ACK})  # a client never sends CONNECT_ERROR
BINARY_PACKETS = frozenset({packet.BINARY_EVENT, packet.BINARY_ACK})


class OneAttachmentPacket(packet.Packet):
    """A Socket.IO packet that a client may send: well formed, and announcing one binary attachment at most.

    python-socketio keeps every binary message that follows a binary packet's header until as many as the
    header announced have arrived, and accepts up to 9,999,999,999: one connection could make the server
    hold message after message of up to ``MAX_FRAME_BYTES``, never answered. A ``frame`` carries one JPEG.

    It also trusts the rest of the packet: undecodable JSON, an event with no name, or a placeholder for an
    attachment that was never announced raised an error per packet (with a traceback in the log), and the
    last left the connection waiting for attachments forever, refusing every later message. Each of these
    now raises ``MalformedPacket`` while the packet is decoded, before python-socketio keeps any state.
    """

    MAX_ATTACHMENTS = 1
    MAX_BINARY_DEPTH = 32  # python-socketio rebuilds a binary packet's data recursively; a frame's is 2 deep

    def __init__(self, *args, encoded_packet=None, **kwargs):
        if encoded_packet is not None and not encoded_packet:
            # The base class would take an empty packet for an event of no data and fail on it later.
            raise MalformedPacket("empty Socket.IO packet")
        super().__init__(*args, encoded_packet=encoded_packet, **kwargs)

    def decode(self, encoded_packet):
        """Decode a client's packet; the number of attachments to wait for, or ``MalformedPacket``."""
        if not isinstance(encoded_packet, str):
            raise MalformedPacket("binary message with no binary packet announcing it")
        try:
            count = super().decode(encoded_packet)
        except RecursionError:
            raise MalformedPacket("packet data nested too deep to decode") from None
        except ValueError as exc:  # JSON that does not parse (JSONDecodeError is one), a packet type not a digit
            raise MalformedPacket(f"undecodable packet: {str(exc)[:120]}") from None
        if count > self.MAX_ATTACHMENTS:
            raise TooManyAttachments(f"binary packet announces {count} attachments; at most {self.MAX_ATTACHMENTS}")
        if self.packet_type not in CLIENT_PACKETS:
            raise MalformedPacket(f"packet type {self.packet_type} is not one a client sends")
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT):
            if not (isinstance(self.data, list) and self.data and isinstance(self.data[0], str)):
                raise MalformedPacket("event packet without an event name")
            if self.data[0] in RESERVED_EVENTS:
                raise MalformedPacket(f"event name {self.data[0]!r} is reserved")
        elif self.packet_type in (packet.ACK, packet.BINARY_ACK) and not isinstance(self.data, list):
            raise MalformedPacket("ack packet whose data is not a list")
        if self.packet_type in BINARY_PACKETS:
            if count < 1:
                raise MalformedPacket("binary packet announcing no attachment")
            self._check_placeholders(count)
        return count

    def _check_placeholders(self, count: int) -> None:
        """Every placeholder names one of the ``count`` attachments, at most ``MAX_BINARY_DEPTH`` levels deep."""
        stack = [(self.data, 1)]
        while stack:
            item, depth = stack.pop()
            if not isinstance(item, (list, dict)):
                continue
            if depth > self.MAX_BINARY_DEPTH:
                raise MalformedPacket(f"binary packet nested deeper than {self.MAX_BINARY_DEPTH} levels")
            if isinstance(item, dict):
                if item.get("_placeholder") and "num" in item:  # what python-socketio replaces by an attachment
                    num = item["num"]
                    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num < count:
                        raise MalformedPacket(f"placeholder for an attachment other than the {count} announced")
                    continue
                item = item.values()
            stack.extend((child, depth + 1) for child in item)


# What python-socketio's own handling of a packet raises for a packet decode lets through (a binary packet for
# a namespace the client has not connected: ValueError). Raised inside an app's handler instead, they are bugs.
PROTOCOL_ERRORS = (ValueError, KeyError, IndexError, TypeError, RecursionError)
_PROTOCOL_MODULES = ("socketio.", "engineio.")


def _raised_by_protocol(exc: BaseException) -> bool:
    """Whether every frame below the message hook is python-socketio's or python-engineio's (no app handler)."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ else None  # below the hook's own frame
    while tb is not None:
        if not tb.tb_frame.f_globals.get("__name__", "").startswith(_PROTOCOL_MODULES):
            return False
        tb = tb.tb_next
    return True


def limit_attachments(socketio) -> None:
    """Close the connection that sends a broken packet, or a binary packet of more than one attachment.

    Call after ``socketio.init_app``. The refusal is one warning line in the log, not a traceback per
    packet, in every async mode (the hook is Engine.IO's, above the transport). An exception raised by an
    event handler (with ``async_handlers=False``, on this same call) is a bug: it keeps its traceback.
    """
    server = socketio.server
    server.packet_class = OneAttachmentPacket
    handle_message = server.eio.handlers["message"]

    # Connections closed lately: the messages a client sent after its broken packet may still arrive (its
    # attachment, above all), and they are as broken; one warning per connection is enough.
    refused: deque[str] = deque(maxlen=256)

    def refuse(eio_sid, why: str) -> None:
        server._binary_packet.pop(eio_sid, None)  # no half-received packet left to take later messages
        if eio_sid in refused:
            log.debug("connection %s already closed: %s", eio_sid, why)
            return
        refused.append(eio_sid)
        log.warning("connection %s closed: %s", eio_sid, why)
        server.eio.disconnect(eio_sid)

    def on_message(eio_sid, data):
        try:
            return handle_message(eio_sid, data)
        except MalformedPacket as exc:
            refuse(eio_sid, str(exc))
        except PROTOCOL_ERRORS as exc:
            if not _raised_by_protocol(exc):
                raise
            refuse(eio_sid, f"broken Socket.IO packet ({type(exc).__name__}: {str(exc)[:120]})")

    server.eio.on("message", on_message)
