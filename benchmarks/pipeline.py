"""In-process time per 640x480 live frame, split into decode / detect / classify.

    python -m benchmarks.pipeline [--frames 300] [--model models/emotion.int8.tflite] [--fps 30] [--op-threads N]
                                  [--one-view]

Prints one JSON object. Also reports the recall of the fast detection path and
of the full-size detector against the true face boxes of the same frames.
Frames are analysed back to back, except in the ``one_face_at_<fps>_fps``
run, which feeds them at a camera's pace as the live page does: there the
cores idle between frames, and the same work takes longer than back to back.
``--op-threads`` sets TensorFlow's threads per op as ``TF_INTRA_OP_THREADS``
does for the server (which runs 1); the default 0 is TensorFlow's own (one
per core). ``--one-view`` classifies each face in its zoomed view only, as
the server does with ``MODEL_TTA=false``, instead of the view and its mirror.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import ROOT, SHARED, collage_frames, machine, percentiles, webcam_frames  # noqa: E402


def run_stream(model, frames_truths, full_scan_every: int, fps: float = 0.0) -> dict:
    """Analyse the frames as one live stream; with ``fps`` > 0 the frames are due 1/fps s apart, as from a camera."""
    import cv2
    import numpy as np

    from app.vision.faces import FaceDetector
    from app.vision.pipeline import StreamAnalyzer
    from app.vision.tracking import iou
    from tests.imagegen import FULL_SIZE

    frames, truths = frames_truths
    stream = StreamAnalyzer(model, max_bytes=1 << 20, max_pixels=1920 * 1080, full_scan_every=full_scan_every)
    for f in frames[:10]:  # warm-up: first full scans, allocator
        stream.process(f)
    stream = StreamAnalyzer(model, max_bytes=1 << 20, max_pixels=1920 * 1080, full_scan_every=full_scan_every)
    timings = {"decode": [], "detect": [], "classify": [], "total": []}
    results = []
    due = time.perf_counter()
    for f in frames:
        if fps > 0:
            due += 1.0 / fps
            time.sleep(max(0.0, due - time.perf_counter()))
        t0 = time.perf_counter()
        r = stream.process(f)
        wall = (time.perf_counter() - t0) * 1000
        for k in ("decode", "detect", "classify"):
            timings[k].append(r["timings_ms"][k])
        timings["total"].append(wall)
        results.append(r)
    reference = FaceDetector(FULL_SIZE)
    n_true = fast_found = ref_found = 0
    for f, r, boxes in zip(frames, results, truths):
        gray = cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE)
        ref = reference.detect(gray)
        n_true += len(boxes)
        fast_found += sum(any(iou(b, face["box"]) > 0.4 for face in r["faces"]) for b in boxes)
        ref_found += sum(any(iou(b, x) > 0.4 for x in ref) for b in boxes)
    return {
        "frames": len(frames),
        "ms": {k: percentiles(v) for k, v in timings.items()},
        "faces_per_frame": round(sum(len(r["faces"]) for r in results) / len(results), 2),
        "true_faces_per_frame": round(n_true / len(frames), 2),
        "recall": round(fast_found / n_true, 4),
        "recall_full_size_detector": round(ref_found / n_true, 4),
    }


def main(argv=None) -> None:
    from app.config import Config

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--model", default=Config.MODEL_PATH,
                   help="the model to serve (default: the served int8 copy, %(default)s)")
    p.add_argument("--full-scan-every", type=int, default=8)
    p.add_argument("--fps", type=float, default=30.0, help="the camera pace of the paced one-face run (default 30)")
    p.add_argument("--op-threads", type=int, default=0,
                   help="TensorFlow threads per op, as TF_INTRA_OP_THREADS (default 0: one per core)")
    p.add_argument("--one-view", action="store_true",
                   help="classify each face in its zoomed view only, as MODEL_TTA=false (default: and its mirror)")
    args = p.parse_args(argv)
    if not args.fps > 0:
        p.error(f"--fps must be above 0, got {args.fps}")
    if args.op_threads < 0:
        p.error(f"--op-threads must be 0 or more, got {args.op_threads}")

    from app.vision.emotions import EmotionModel, ModelLoadError, set_op_threads

    if not set_op_threads(args.op_threads):
        raise SystemExit(f"--op-threads {args.op_threads} not applied: TensorFlow was already running")

    try:
        model = EmotionModel.load(args.model, tta=not args.one_view)
    except ModelLoadError as exc:
        p.error(str(exc))
    one = webcam_frames(SHARED / "faces" / "obama.jpg", args.frames)
    several = collage_frames(4, args.frames)
    out = {
        "benchmark": "pipeline",
        "machine": machine(),
        "model": os.path.relpath(args.model, ROOT),
        "tta": model.tta,
        "op_threads": args.op_threads,
        "full_scan_every": args.full_scan_every,
        "one_face": run_stream(model, one, args.full_scan_every),
        "four_faces": run_stream(model, several, args.full_scan_every),
        "full_scan_every_frame_one_face": run_stream(model, (one[0][:100], one[1][:100]), 1),
        f"one_face_at_{args.fps:g}_fps": run_stream(model, one, args.full_scan_every, fps=args.fps),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
