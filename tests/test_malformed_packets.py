"""Broken Socket.IO packets close their connection with one warning; handlers take any arguments; no tracebacks.

A packet that breaks the Socket.IO protocol (bad JSON, nesting deeper than the
interpreter can parse, an event with no name, a placeholder for an attachment
that was never announced...) gets one warning line in the log and its
connection closed; the server and every other connection carry on. An event
sent with no argument, extra arguments or a payload of the wrong type gets its
usual answer. Checked against the message hook with the test client, and
against both real servers (gunicorn threading, eventlet) over a raw WebSocket.
"""
from __future__ import annotations

import logging
import time

import cv2
import pytest
import websocket

from app.classroom.service import NAMESPACE
from app.extensions import socketio
from tests.browser import ServerProcess
from tests.imagegen import encode, fit_frame
from tests.live_clients import Probe

# Socket.IO packets as a hostile client writes them (the Engine.IO "4", message, is added on the wire),
# each with the binary messages that follow it.
BROKEN = {
    "json cut short": ('2["frame"', []),
    "json nested too deep": ("2" + "[" * 100_000 + "]" * 100_000, []),
    "event without a name": ("2[]", []),
    "event as an object": ('2{"a":1}', []),
    "event named by a number": ('2[5,{}]', []),
    "event of no data": ("2", []),
    "empty packet": ("", []),
    "unknown packet type": ('7["frame"]', []),
    "connect_error from a client": ('4{"message":"x"}', []),
    "ack of an object": ('31{"a":1}', []),
    "placeholder past the attachments": ('51-["frame",{"seq":1,"image":{"_placeholder":true,"num":3}}]',
                                         [b"\xff\xd8\xff"]),
    "placeholder numbered by a string": ('51-["frame",{"seq":1,"image":{"_placeholder":true,"num":"0"}}]',
                                         [b"\xff\xd8\xff"]),
    "binary packet of no attachment": ('50-["frame",{"seq":1}]', [b"\xff\xd8\xff"]),
    # Parses, but python-socketio's rebuilding of the data recurses two frames a level: RecursionError.
    "binary packet nested too deep": ('51-["frame",' + "[" * 600 + '{"_placeholder":true,"num":0}' + "]" * 601,
                                      [b"\xff\xd8\xff"]),
    "binary message with no packet before it": (b"\xff\xd8\xff", []),
    "binary packet for a namespace not connected": ('51-/classroom,["dashboard_join",{"_placeholder":true,"num":0}]',
                                                    [b"\xff\xd8\xff"]),
    "reserved event name": ('2["disconnect"]', []),
}


@pytest.fixture(scope="module")
def frame(faces_dir) -> bytes:
    return encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)


def answered(sc, seq: int, timeout: float = 15.0) -> str | None:
    """The name of the answer (``faces``/``frame_error``) the test client got for frame ``seq``; None at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in sc.get_received():
            if event["name"] in ("faces", "frame_error") and event["args"][0].get("seq") == seq:
                return event["name"]
        time.sleep(0.01)
    return None


# -- the message hook, with the test client --------------------------------------------------------

@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_packet_closes_its_connection_with_one_warning(socket_client, frame, caplog, monkeypatch, name):
    server = socketio.server
    closed = []
    monkeypatch.setattr(server.eio, "disconnect", closed.append)  # the test client has no Engine.IO socket to close
    caplog.set_level(logging.WARNING)
    header, attachments = BROKEN[name]
    on_message = server.eio.handlers["message"]  # what the Engine.IO layer calls for each WebSocket message
    on_message(socket_client.eio_sid, header)
    for attachment in attachments:
        if not closed:
            on_message(socket_client.eio_sid, attachment)
    assert closed == [socket_client.eio_sid]
    assert socket_client.eio_sid not in server._binary_packet
    warnings = [r for r in caplog.records if r.name == "moodlens.live.transport"]
    assert [r.levelname for r in warnings] == ["WARNING"] and warnings[0].exc_info is None
    assert len(warnings[0].getMessage()) < 300 and "\n" not in warnings[0].getMessage()
    socket_client.emit("frame", {"seq": 2, "image": frame})  # the app's own packets still work
    assert answered(socket_client, 2) == "faces"


def test_a_bug_in_a_handler_keeps_its_traceback(socket_client, monkeypatch):
    """Only broken packets close a connection quietly: an exception raised by a handler is a bug, not the client's."""
    server = socketio.server
    closed = []
    monkeypatch.setattr(server.eio, "disconnect", closed.append)

    def buggy(_sid, *_args):
        return {}["missing"]

    monkeypatch.setitem(server.handlers["/"], "buggy", buggy)
    with pytest.raises(KeyError):
        server.eio.handlers["message"](socket_client.eio_sid, '2["buggy",{}]')
    assert closed == []


def test_well_formed_packets_still_decode():
    from app.live.transport import OneAttachmentPacket

    pkt = OneAttachmentPacket(encoded_packet='51-["frame",{"seq":1,"image":{"_placeholder":true,"num":0}}]')
    assert pkt.attachment_count == 1 and pkt.add_attachment(b"jpeg") and pkt.data == ["frame", {"seq": 1,
                                                                                               "image": b"jpeg"}]
    assert OneAttachmentPacket(encoded_packet='2/classroom,7["dashboard_join",{"code":"AB"}]').data[0] == \
        "dashboard_join"
    assert OneAttachmentPacket(encoded_packet="0/classroom,").namespace == "/classroom"
    assert OneAttachmentPacket(encoded_packet="1").packet_type == 1
    assert OneAttachmentPacket(encoded_packet="31[]").data == []


# -- handlers with odd arguments -------------------------------------------------------------------

@pytest.mark.parametrize("args", [(), (None,), ("CODE",), ([1],), ({"code": "x"}, "extra"), ({"code": "x"}, 1, 2)])
def test_dashboard_join_with_odd_arguments_gets_an_error(capp, teacher, args):
    dash = socketio.test_client(capp, namespace=NAMESPACE, flask_test_client=teacher.client)
    try:
        answer = dash.emit("dashboard_join", *args, namespace=NAMESPACE, callback=True)
        assert set(answer) == {"error"} and answer["error"], answer
    finally:
        dash.disconnect(namespace=NAMESPACE)


def test_dashboard_events_with_an_extra_argument_still_work(capp, teacher):
    dash = socketio.test_client(capp, namespace=NAMESPACE, flask_test_client=teacher.client)
    try:
        answer = dash.emit("dashboard_join", {"code": teacher.code}, "extra", namespace=NAMESPACE, callback=True)
        assert answer["ok"] is True and "summary" in answer
        assert dash.emit("dashboard_leave", {"code": teacher.code}, "extra", namespace=NAMESPACE,
                         callback=True) == {"ok": True}
        assert dash.emit("dashboard_leave", namespace=NAMESPACE, callback=True) == {"ok": True}
    finally:
        dash.disconnect(namespace=NAMESPACE)


@pytest.mark.parametrize("args", [(), ("x",), ({"a": 1}, "extra", 3)])
def test_live_events_take_any_arguments(socket_client, frame, args):
    assert socket_client.emit("classroom_leave", *args, callback=True) == {"ok": False}
    assert socket_client.emit("classroom_settings", *args, callback=True) == {}
    socket_client.emit("frame", *args)
    assert [e["name"] for e in socket_client.get_received()] == ["frame_error"]
    socket_client.emit("frame", {"seq": 3, "image": frame}, "extra")
    assert answered(socket_client, 3) == "faces"


# -- real servers over a raw WebSocket -------------------------------------------------------------

@pytest.fixture(scope="module", params=["threading", "eventlet"])
def live_server(request, model_copy, tmp_path_factory):
    mode = request.param
    with ServerProcess(mode, workdir=tmp_path_factory.mktemp(f"malformed-{mode}"), model_path=model_copy) as server:
        yield server


def raw_connection(server) -> websocket.WebSocket:
    """A WebSocket connected to the server's Socket.IO namespace ``/`` (handshake done)."""
    ws = websocket.create_connection(server.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
                                     timeout=5)
    assert ws.recv().startswith("0{")  # Engine.IO open
    ws.send("40")
    assert ws.recv().startswith("40{")  # Socket.IO connect
    return ws


def closed_by_server(ws, timeout: float = 5.0) -> bool:
    """True once the server closed the connection (Engine.IO close packet, close frame or EOF)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ws.settimeout(left)
        try:
            message = ws.recv()
        except websocket.WebSocketTimeoutException:
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return True
        if message in ("", "1"):
            return True
        if message == "2":  # Engine.IO ping
            ws.send("3")
    return False


# One of each way a packet breaks (the JSON, the event, the attachments, the hook's own catch) on the real servers;
# the message hook gets every case above.
ON_THE_WIRE = ["json cut short", "reserved event name", "placeholder past the attachments",
               "binary packet nested too deep", "binary packet for a namespace not connected"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ON_THE_WIRE)
def test_a_broken_packet_on_a_real_server_closes_only_its_connection(live_server, frame, name):
    header, attachments = BROKEN[name]
    ws = raw_connection(live_server)
    mark = len(live_server.log_text())
    try:
        if isinstance(header, bytes):
            ws.send_binary(header)
        else:
            ws.send("4" + header)
        for attachment in attachments:
            ws.send_binary(attachment)
        assert closed_by_server(ws), f"{live_server.mode}: the connection stayed open after a broken packet"
    finally:
        ws.close()
    probe = Probe(live_server.url).connect()  # a fresh connection is served
    try:
        probe.emit("frame", {"seq": 4, "image": frame})
        assert probe.wait_for("faces", lambda msg: msg.get("seq") == 4, timeout=15) is not None
    finally:
        probe.close()
    log = live_server.log_text()[mark:]
    assert "Traceback" not in log, log[-3000:]
    assert len([line for line in log.splitlines() if "WARNING moodlens.live.transport" in line]) == 1, log[-3000:]
