"""Socket.IO round trip against a real server: one client, then N concurrent clients.

    python -m benchmarks.socket_roundtrip [--url http://127.0.0.1:8000] [--clients 8] [--seconds 20]
                                          [--stream-max-fps N] [--model models/emotion.int8.tflite]

Without ``--url`` it starts the production server (gunicorn, threading mode)
on a free loopback port. Each client keeps one frame in flight, as the page
does: it sends the next frame when the answer to the previous one arrives.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from contextlib import nullcontext

import socketio

from benchmarks.common import ROOT, SHARED, machine, percentiles, webcam_frames


class Client:
    """One streaming client: send, wait for the answer, repeat."""

    def __init__(self, url: str, frames: list[bytes]):
        self.url, self.frames = url, frames
        self.latencies: list[float] = []
        self.errors = 0
        self.answered = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("faces", self._answer)
        self.sio.on("frame_error", self._error)
        self.expect = -1

    def _answer(self, msg):
        if msg.get("seq") == self.expect:
            self.answered.set()

    def _error(self, msg):
        self.errors += 1
        self._answer(msg)

    def run(self, seconds: float, start: threading.Barrier) -> None:
        self.sio.connect(self.url, transports=["websocket"], wait_timeout=10)
        start.wait()
        deadline = time.perf_counter() + seconds
        seq = 0
        while time.perf_counter() < deadline:
            self.answered.clear()
            self.expect = seq
            t0 = time.perf_counter()
            self.sio.emit("frame", {"seq": seq, "image": self.frames[seq % len(self.frames)]})
            if not self.answered.wait(5):
                self.errors += 1
                continue
            self.latencies.append((time.perf_counter() - t0) * 1000)
            seq += 1
        self.sio.disconnect()


def scenario(url: str, frames: list[bytes], clients: int, seconds: float) -> dict:
    group = [Client(url, frames) for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=c.run, args=(seconds, barrier)) for c in group]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    per_client = [len(c.latencies) / seconds for c in group]
    all_lat = [x for c in group for x in c.latencies]
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "frames_answered": len(all_lat),
        "total_fps": round(len(all_lat) / seconds, 1),
        "per_client_fps": {"min": round(min(per_client), 1), "median": round(statistics.median(per_client), 1),
                           "max": round(max(per_client), 1)},
        "latency_ms": percentiles(all_lat),
        "errors": sum(c.errors for c in group),
    }


def main(argv=None) -> None:
    from app.config import Config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--stream-max-fps", type=float,
                   help="STREAM_MAX_FPS of the started server (default: the shipped setting; 0: no cap)")
    p.add_argument("--model", default=Config.MODEL_PATH,
                   help="MODEL_PATH of the started server (default: the served model, %(default)s)")
    args = p.parse_args(argv)

    frames = webcam_frames(SHARED / "faces" / "obama.jpg", 60)[0]
    if args.url:
        server = nullcontext(None)
    else:
        from tests.browser import ServerProcess

        env = {} if args.stream_max_fps is None else {"STREAM_MAX_FPS": f"{args.stream_max_fps:g}"}
        server = ServerProcess("threading", workdir=tempfile.mkdtemp(prefix="moodlens-bench-"), env=env,
                               model_path=args.model)
    with server as proc:
        url = args.url or proc.url
        warm = scenario(url, frames, 1, 3)  # first frames: full scans, allocator warm-up
        out = {
            "benchmark": "socket_roundtrip",
            "machine": machine(),
            "server": args.url or "gunicorn -k gthread -w 1 --threads 64 (started by the benchmark)",
            "stream_max_fps": "shipped default" if args.stream_max_fps is None else args.stream_max_fps,
            "model": None if args.url else os.path.relpath(args.model, ROOT),
            "frame": "640x480 JPEG q70, one face",
            "warm_up_frames": warm["frames_answered"],
            "one_client": scenario(url, frames, 1, args.seconds),
            f"{args.clients}_clients": scenario(url, frames, args.clients, args.seconds),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
