"""Load and soak: N Socket.IO clients stream real JPEG frames at a chosen rate; server memory over time.

    python -m benchmarks.load [--url http://127.0.0.1:8000 --server-pid PID] [--clients 8] [--fps 5]
                              [--seconds 600] [--warmup 60] [--sample-every 10] [--mode paced|page]
                              [--server-mode threading|eventlet]

Without ``--url`` it starts the production server (gunicorn, threading mode,
on a copy of the model; ``--server-mode eventlet``: ``python -m app`` under
eventlet) on a free loopback port and samples its memory and threads.

``--mode paced`` (default): each client sends a frame every 1/fps seconds
whatever happens (open loop); frames the server cannot keep up with are
superseded by newer ones (newest wins) and never answered: they are counted
as ``dropped``. ``--mode page``: as the browser page does, one frame in flight,
the next when the answer comes (at most ``fps`` per second, 1.5 s timeout).

Reports throughput, latency p50/p95/p99 (after the warm-up), dropped frames
(and the server's own ``superseded`` count), errors (``frame_error`` events,
disconnects, unanswered frames past the deadline in page mode) and the server's
resident memory (RSS of its process group, from /proc) and thread count over
time, with the growth from the end of the warm-up to the end. Prints one JSON
object.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import socketio

from benchmarks.common import SHARED, machine, percentiles, webcam_frames

PAGE_TIMEOUT = 1.5  # the page's answer timeout (static/js/stream.js)


# -- server memory ----------------------------------------------------------------------------

def group_pids(pgid: int) -> list[int]:
    """Every live process in process group ``pgid`` (a gunicorn master and its worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
            pids.append(int(entry.name))
    return pids


def status_fields(pid: int, *names: str) -> list[int]:
    """Numbers from /proc/<pid>/status (e.g. ``VmRSS`` in KiB, ``Threads``), read once; 0s when it is gone."""
    found = dict.fromkeys(names, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key] = int(value.split()[0])
    except OSError:
        pass
    return [found[n] for n in names]


class MemorySampler(threading.Thread):
    """Samples the RSS and thread count of a process group (or one pid) every ``every`` seconds."""

    def __init__(self, pid: int | None, group: bool, every: float):
        super().__init__(daemon=True)
        self.pid, self.group, self.every = pid, group, every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.threads: list[tuple[float, int]] = []  # (seconds since start, threads of the process(es))
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def measure(self) -> tuple[float, int]:
        """(RSS in MiB, thread count) of the process or its group."""
        pids = group_pids(self.pid) if self.group else [self.pid]
        per_pid = [status_fields(p, "VmRSS", "Threads") for p in pids]
        return round(sum(kb for kb, _ in per_pid) / 1024, 1), sum(n for _, n in per_pid)

    def report(self, warmup: float) -> dict:
        """``memory_report`` of the samples, with the thread counts beside them."""
        return memory_report(self.samples, warmup) | {"threads": [list(t) for t in self.threads]}

    def run(self) -> None:
        if self.pid is None:
            return
        while True:
            t, (mib, threads) = round(time.monotonic() - self.t0, 1), self.measure()
            self.samples.append((t, mib))
            self.threads.append((t, threads))
            if self.stop.wait(self.every):
                break


# -- clients ----------------------------------------------------------------------------------

class LoadClient:
    """One streaming client; latencies are kept for frames sent after ``measure_from``."""

    def __init__(self, url: str, frames: list[bytes], fps: float, mode: str, headers: dict | None = None):
        self.url, self.frames, self.fps, self.mode = url, frames, fps, mode
        self.headers = headers or {}
        self.sent = self.answered = self.frame_errors = self.timeouts = self.disconnects = 0
        self.connect_error: str | None = None
        self.server_superseded = 0
        self.latencies: list[float] = []
        self.measure_from = float("inf")
        self._pending: dict[int, float] = {}
        self._lock = threading.Lock()
        self._answer = threading.Event()
        self._awaited: int | None = None  # page mode: the frame in flight, whose answer alone frees the next
        self.sio = socketio.Client(reconnection=False, handle_sigint=False)
        self.sio.on("faces", self._on_faces)
        self.sio.on("frame_error", self._on_error)
        self.sio.on("disconnect", self._on_disconnect)
        self.closing = False

    def _done(self, seq) -> float | None:
        with self._lock:
            t0 = self._pending.pop(seq, None)
            if seq == self._awaited:  # a late answer to a frame given up on frees nothing, as on the page
                self._answer.set()
        return t0

    def _on_faces(self, msg):
        now = time.perf_counter()
        t0 = self._done(msg.get("seq"))
        self.server_superseded = max(self.server_superseded, int(msg.get("superseded") or 0))
        if t0 is None:
            return
        self.answered += 1
        if t0 >= self.measure_from:
            self.latencies.append((now - t0) * 1000)

    def _on_error(self, msg):
        self.frame_errors += 1
        self._done(msg.get("seq"))

    def _on_disconnect(self, *_):
        if not self.closing:
            self.disconnects += 1

    def connect(self) -> None:
        self.sio.connect(self.url, transports=["websocket"], headers=self.headers, wait_timeout=10)

    def _send(self, seq: int) -> None:
        with self._lock:
            self._pending[seq] = time.perf_counter()
        self.sio.emit("frame", {"seq": seq, "image": self.frames[seq % len(self.frames)]})
        self.sent += 1

    def run(self, seconds: float, start: threading.Barrier) -> None:
        start.wait()
        interval = 1.0 / self.fps if self.fps > 0 else 0.0
        deadline = time.perf_counter() + seconds
        next_at = time.perf_counter()
        seq = 0
        try:
            while time.perf_counter() < deadline and self.sio.connected:
                if self.mode == "page":
                    with self._lock:
                        self._awaited = seq
                        self._answer.clear()
                    self._send(seq)
                    if not self._answer.wait(PAGE_TIMEOUT):
                        self.timeouts += 1
                        with self._lock:
                            self._pending.pop(seq, None)
                else:
                    self._send(seq)
                seq += 1
                next_at += interval
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                elif self.mode == "paced":
                    next_at = time.perf_counter()  # fell behind: do not burst to catch up
        except socketio.exceptions.SocketIOError:
            self.disconnects += 1

    def finish(self, grace: float = 5.0) -> int:
        """Wait up to ``grace`` s for outstanding answers; returns the frames never answered."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                left = len(self._pending)
            if left <= 0:
                break
            # In flight plus at most one waiting frame can still be answered; the rest were superseded.
            time.sleep(0.05)
        self.closing = True
        self.sio.disconnect()
        with self._lock:
            return len(self._pending)


def run_load(url: str, frames: list[bytes], clients: int, fps: float, seconds: float, warmup: float,
             mode: str = "paced", sampler: MemorySampler | None = None) -> dict:
    """Run ``clients`` clients for ``seconds`` (the first ``warmup`` not measured); returns the figures."""
    group = [LoadClient(url, frames, fps, mode) for _ in range(clients)]
    for c in group:
        c.connect()
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=c.run, args=(seconds, barrier), daemon=True) for c in group]
    for t in threads:
        t.start()
    if sampler is not None:
        sampler.t0 = time.monotonic()
        sampler.start()
    barrier.wait()
    t0 = time.perf_counter()
    measure_from = t0 + warmup
    for c in group:
        c.measure_from = measure_from
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.perf_counter() - t0
    unanswered = [c.finish() for c in group]
    if sampler is not None:
        sampler.stop.set()
        sampler.join(5)
    measured = max(elapsed - warmup, 1e-9)
    lat = [x for c in group for x in c.latencies]
    sent, answered = sum(c.sent for c in group), sum(c.answered for c in group)
    frame_errors = sum(c.frame_errors for c in group)
    out = {
        "clients": clients, "mode": mode, "fps_per_client": fps, "seconds": round(elapsed, 1), "warmup_s": warmup,
        "frames_sent": sent, "frames_answered": answered,
        "throughput_fps": round(len(lat) / measured, 2),
        "offered_fps": round(sent / elapsed, 2),
        "latency_ms": percentiles(lat),
        "dropped": sum(unanswered) if mode == "paced" else 0,
        "server_superseded": sum(c.server_superseded for c in group),
        "errors": {"frame_error": frame_errors, "disconnects": sum(c.disconnects for c in group),
                   "timeouts": sum(c.timeouts for c in group)},
    }
    out["error_count"] = sum(out["errors"].values())
    if sampler is not None and sampler.samples:
        out["memory"] = sampler.report(warmup)
    return out


def memory_report(samples: list[tuple[float, float]], warmup: float) -> dict:
    """RSS over time and its growth from the first sample after the warm-up to the last one."""
    after = [mib for t, mib in samples if t >= warmup] or [samples[-1][1]]
    base, end = after[0], after[-1]
    growth = round((end - base) / base * 100, 2) if base else None
    return {"unit": "MiB", "samples": [list(s) for s in samples], "start_mb": samples[0][1],
            "after_warmup_mb": base, "end_mb": end, "max_mb": max(m for _, m in samples), "growth_pct": growth}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--server-pid", type=int, help="with --url: the server's pid, to sample its memory")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--fps", type=float, default=5.0, help="frames per second per client")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--warmup", type=float, default=30, help="seconds not measured (memory growth counts after it)")
    p.add_argument("--sample-every", type=float, default=10, help="seconds between memory samples")
    p.add_argument("--mode", choices=("paced", "page"), default="paced")
    p.add_argument("--server-mode", choices=("threading", "eventlet"), default="threading",
                   help="the server it starts: gunicorn (threading, production) or python -m app under eventlet")
    args = p.parse_args(argv)

    frames = webcam_frames(SHARED / "faces" / "obama.jpg", 60)[0]
    if args.url:
        server = nullcontext(None)
    else:
        from tests.browser import MODEL, ServerProcess, snapshot_model

        work = Path(tempfile.mkdtemp(prefix="moodlens-load-"))
        server = ServerProcess(args.server_mode, workdir=work, model_path=snapshot_model(work))
    try:
        with server as proc:
            url = args.url or proc.url
            pid, group = (args.server_pid, False) if args.url else (proc.proc.pid, True)
            sampler = MemorySampler(pid, group, args.sample_every) if pid else None
            result = run_load(url, frames, args.clients, args.fps, args.seconds, args.warmup, args.mode, sampler)
    finally:
        if not args.url:
            shutil.rmtree(work, ignore_errors=True)  # the model copy and the server's log
    mem = result.get("memory") or {}
    out = {
        "benchmark": "load",
        "machine": machine() | {"loadavg_at_end": list(os.getloadavg())},
        "server": args.url or ("gunicorn -c gunicorn.conf.py -k gthread -w 1 --threads 64" if args.server_mode == "threading"
                               else "ASYNC_MODE=eventlet python -m app") + " (started by the benchmark)",
        "model": None if args.url else MODEL.relative_to(MODEL.parents[1]).as_posix(),  # what it served
        "frame": "640x480 JPEG q70, one face",
        **result,
        "verdict": {"no_errors": result["error_count"] == 0,
                    "memory_growth_below_10pct": None if not mem else (mem["growth_pct"] or 0) <= 10},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
