"""benchmarks.pipeline: the paced run feeds frames at the camera's pace; bad arguments are refused."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from benchmarks import pipeline
from benchmarks.common import webcam_frames


@pytest.fixture(scope="module")
def model():
    from app.extensions import load_model
    from tests.conftest import MODEL

    return load_model(str(MODEL), True)


@pytest.mark.parametrize("fps", [0.0, 20.0])
def test_frames_are_paced_only_when_asked(model, faces_dir, fps, monkeypatch):
    frames = webcam_frames(faces_dir / "obama.jpg", 16)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    # The benchmark's own view of the time module: other threads' sleeps are not counted.
    monkeypatch.setattr(pipeline, "time", SimpleNamespace(perf_counter=time.perf_counter, sleep=sleep))
    t0 = time.perf_counter()
    result = pipeline.run_stream(model, frames, full_scan_every=8, fps=fps)
    elapsed = time.perf_counter() - t0
    assert result["frames"] == 16 and result["recall"] == 1.0
    assert set(result["ms"]) == {"decode", "detect", "classify", "total"}
    if fps:
        # 16 frames due 1/20 s apart: the last one is not analysed before 0.8 s.
        assert len(sleeps) == 16
        assert elapsed >= 16 / fps
    else:
        assert sleeps == []  # back to back


@pytest.mark.parametrize("argv, reason", [
    (["--fps", "0"], "--fps must be above 0"),
    (["--fps", "nan"], "--fps must be above 0"),
    (["--op-threads", "-1"], "--op-threads must be 0 or more"),
    (["--model", "models/nowhere.tflite", "--frames", "1"], "emotion model not found"),
])
def test_bad_arguments_are_refused_with_a_reason(argv, reason, capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(argv)
    assert exc.value.code == 2
    assert reason in capsys.readouterr().err


@pytest.mark.parametrize("flags, views", [([], 2), (["--one-view"], 1)])
def test_one_view_classifies_each_face_once(flags, views, capsys, monkeypatch):
    from app.vision.emotions import BATCH_SIZES, EmotionModel

    batches: list[int] = []  # the batch size of every model call
    real = EmotionModel._run

    def counting(self, batch):
        batches.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(EmotionModel, "_run", counting)
    pipeline.main(["--frames", "2", "--fps", "200", *flags])
    out = json.loads(capsys.readouterr().out)
    assert out["tta"] is (views == 2)
    assert out["one_face"]["faces_per_frame"] == 1.0
    calls = batches[len(BATCH_SIZES):]  # after the warm-up's one call per batch size
    assert min(calls) == views  # a frame with one face: one call with its views (two views never make a call of 1)
