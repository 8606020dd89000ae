"""What a flooding client costs its neighbours: a normal client's latency alone, beside a page, beside a flood.

    python -m benchmarks.flood [--url http://127.0.0.1:8000] [--rounds 6] [--phase-seconds 3] [--flood-fps 300]

Without ``--url`` it starts the production server (gunicorn, threading mode)
on a free loopback port. A normal client streams as the page does (one frame
in flight, 10 frames/s at most). Its round trip is measured in three
conditions: alone; beside a client that streams as the page does,
unthrottled (as fast as its answers come: the most a well-behaved page asks
for); and beside a client that floods ``--flood-fps`` frames per second
without waiting. The conditions are interleaved over ``--rounds`` short
rounds (their order reversed every other round), so that the machine's other
load falls into all three alike.

The goal (issue 5): beside the flood, the normal client's median is at most
20% above its median beside the page-like client. Any second client shares
the CPU, so the comparison is with a client that streams as the page does,
not with no neighbour at all. The clients run on the same machine as the
server; on 2 cores the flooding client's own sending competes for the CPU too.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import cv2

from benchmarks.common import SHARED, machine, percentiles
from benchmarks.load import group_pids
from tests.imagegen import encode, fit_frame
from tests.live_clients import Flooder, Paced, beside


def flood_frames() -> list[bytes]:
    """Four 640x480 JPEGs of one face (qualities 70-73: different bytes, the same picture)."""
    base = fit_frame(cv2.imread(str(SHARED / "faces" / "obama.jpg")))
    return [encode(base, ".jpg", quality=70 + i) for i in range(4)]


def cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of group ``pgid``."""
    ticks = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(url: str, frames: list[bytes], rounds: int, phase_seconds: float, flood_fps: float,
            server_pgid: int | None = None) -> dict:
    """The normal client's latencies in the three conditions; with ``server_pgid``, the server's CPU in each."""
    normal = Paced(url, frames, fps=10)
    greedy = Paced(url, frames, fps=0)
    flooder = Flooder(url, frames, fps=flood_fps)
    try:
        normal.run(3.0, record=False)  # warm-up: first frames are full scans
        lat = {"alone": [], "beside_page": [], "beside_flood": []}
        neighbours = {"alone": time.sleep, "beside_page": lambda s: greedy.run(s, record=False),
                      "beside_flood": flooder.run}
        cpu = {name: {"server": 0.0, "clients": 0.0, "seconds": 0.0} for name in lat}
        for round_ in range(rounds):
            order = list(lat) if round_ % 2 == 0 else list(reversed(lat))
            for name in order:
                before = (time.monotonic(), time.process_time(), cpu_seconds(server_pgid) if server_pgid else 0.0)
                lat[name] += beside(normal, neighbours[name], phase_seconds)
                cpu[name]["seconds"] += time.monotonic() - before[0]
                cpu[name]["clients"] += time.process_time() - before[1]
                if server_pgid:
                    cpu[name]["server"] += cpu_seconds(server_pgid) - before[2]
        time.sleep(1.0)  # the flood's last answers
        p50 = {name: statistics.median(values) for name, values in lat.items()}
        return {
            "normal_client_latency_ms": {name: percentiles(values) for name, values in lat.items()},
            "normal_client_frames": {name: len(values) for name, values in lat.items()},
            "flood_over_page_p50": round(p50["beside_flood"] / p50["beside_page"], 3),
            "page_over_alone_p50": round(p50["beside_page"] / p50["alone"], 3),
            "goal_flood_within_20_percent_of_page": p50["beside_flood"] <= 1.2 * p50["beside_page"],
            # Cores busy on average in each condition: the server's processes, and this process's clients
            # (the normal client and its neighbour, which share the machine with the server).
            "cores_used": {name: {"server": round(c["server"] / c["seconds"], 3) if server_pgid else None,
                                  "clients": round(c["clients"] / c["seconds"], 3)} for name, c in cpu.items()},
            "flood": {
                "frames_sent": flooder.sent,
                "frames_per_second": round(flooder.sent / flooder.flooding_seconds, 1),
                "answered": len(flooder.answers),
                "answered_per_second": round(len(flooder.answers) / flooder.flooding_seconds, 1),
                "superseded_by_server": flooder.answers[-1][1]["superseded"] if flooder.answers else None,
            },
        }
    finally:
        for client in (normal, greedy, flooder):
            client.probe.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server (default: start one)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--phase-seconds", type=float, default=3.0, help="length of each condition in each round")
    p.add_argument("--flood-fps", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.flood_fps <= 0:
        p.error("--rounds must be at least 1 and --flood-fps above 0")
    if args.phase_seconds < 2:
        p.error("--phase-seconds must be at least 2 (the neighbour gets 0.5 s to start, the measure 1 s less)")

    frames = flood_frames()
    if args.url:
        server = nullcontext(None)
    else:
        from tests.browser import ServerProcess

        server = ServerProcess("threading", workdir=tempfile.mkdtemp(prefix="moodlens-bench-"))
    with server as proc:
        out = {
            "benchmark": "flood",
            "machine": machine(),
            "server": args.url or "gunicorn -k gthread -w 1 --threads 64 (started by the benchmark)",
            "frame": "640x480 JPEG q70-73, one face",
            "rounds": args.rounds,
            "phase_seconds": args.phase_seconds,
        } | measure(args.url or proc.url, frames, args.rounds, args.phase_seconds, args.flood_fps,
                    server_pgid=None if args.url else proc.proc.pid)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
