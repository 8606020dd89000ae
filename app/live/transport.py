"""The threading mode's WebSocket: read in chunks that fit a live frame, written one frame at a time (none after
the close frame), closed quietly once the client has gone. In every mode: binary packets of one attachment at most."""
from __future__ import annotations

import logging
import threading

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


def install(socketio) -> bool:
    """Use ``LiveWebSocket`` for a threading-mode server; other modes keep their own. True if installed."""
    eio = socketio.server.eio
    if eio._async.get("websocket") is not SimpleWebSocketWSGI:
        return False
    eio._async = {**eio._async, "websocket": LiveWebSocket}  # this server's copy; the driver's table is shared
    return True


class TooManyAttachments(ValueError):
    """A binary packet announced more attachments than any event of this app carries."""


class OneAttachmentPacket(packet.Packet):
    """A Socket.IO packet that announces at most one binary attachment: a ``frame`` carries one JPEG.

    python-socketio keeps every binary message that follows a binary packet's header until as many as the
    header announced have arrived, and accepts up to 9,999,999,999: one connection could make the server
    hold message after message of up to ``MAX_FRAME_BYTES``, never answered.
    """

    MAX_ATTACHMENTS = 1

    def decode(self, encoded_packet):
        count = super().decode(encoded_packet)
        if count and count > self.MAX_ATTACHMENTS:
            raise TooManyAttachments(f"binary packet announces {count} attachments; at most {self.MAX_ATTACHMENTS}")
        return count


def limit_attachments(socketio) -> None:
    """Refuse binary packets of more than one attachment by closing the connection that sent one.

    Call after ``socketio.init_app``. The refusal is one warning in the log, not a traceback per packet.
    """
    server = socketio.server
    server.packet_class = OneAttachmentPacket
    handle_message = server.eio.handlers["message"]

    def on_message(eio_sid, data):
        try:
            return handle_message(eio_sid, data)
        except TooManyAttachments as exc:
            log.warning("connection %s closed: %s", eio_sid, exc)
            server.eio.disconnect(eio_sid)

    server.eio.on("message", on_message)
