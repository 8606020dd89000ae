"""benchmarks.pipeline: the paced run feeds frames at the camera's pace; bad arguments are refused."""
from __future__ import annotations

import time

import pytest

from benchmarks import pipeline
from benchmarks.common import webcam_frames


@pytest.fixture(scope="module")
def model():
    from app.extensions import load_model
    from tests.conftest import MODEL

    return load_model(str(MODEL), True)


@pytest.mark.parametrize("fps", [0.0, 20.0])
def test_a_paced_stream_takes_at_least_its_frames_over_the_pace(model, faces_dir, fps, monkeypatch):
    frames = webcam_frames(faces_dir / "obama.jpg", 16)
    sleeps: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(pipeline.time, "sleep", sleep)
    t0 = time.perf_counter()
    result = pipeline.run_stream(model, frames, full_scan_every=8, fps=fps)
    elapsed = time.perf_counter() - t0
    assert result["frames"] == 16 and result["recall"] == 1.0
    assert set(result["ms"]) == {"decode", "detect", "classify", "total"}
    if fps:
        # 16 frames due 1/20 s apart: the last one is not analysed before 0.8 s.
        assert elapsed >= 16 / fps
        assert len(sleeps) == 16
    else:
        assert sleeps == []  # back to back


@pytest.mark.parametrize("argv, reason", [
    (["--fps", "0"], "--fps must be above 0"),
    (["--fps", "nan"], "--fps must be above 0"),
    (["--op-threads", "-1"], "--op-threads must be 0 or more"),
])
def test_bad_arguments_are_refused_with_a_reason(argv, reason, capsys):
    with pytest.raises(SystemExit) as exc:
        pipeline.main(argv)
    assert exc.value.code == 2
    assert reason in capsys.readouterr().err

