"""The two ways to serve MoodLens refuse to start, with one clear line, when the model is unusable."""
from __future__ import annotations

import pytest

from tests.browser import SERVER_MODES, ServerError, ServerProcess

# gunicorn's worker exits with 4 ("app failed to load") so the master stops
# instead of restarting it; ``python -m app`` exits with 1.
EXIT_CODES = {"threading": 4, "eventlet": 1}


@pytest.mark.parametrize("mode", SERVER_MODES)
@pytest.mark.parametrize(("problem", "message"), [
    ("missing", "emotion model not found"),
    ("unreadable", "is unreadable"),
])
def test_server_refuses_to_start_without_a_usable_model(tmp_path, mode, problem, message):
    model = tmp_path / "emotion.keras"
    if problem == "unreadable":
        model.write_bytes(b"this is not a Keras archive")
    server = ServerProcess(mode, workdir=tmp_path, model_path=model, startup_timeout=90)
    with pytest.raises(ServerError) as failed:
        server.start()
    assert failed.value.exit_code == EXIT_CODES[mode], failed.value
    output = failed.value.output
    line = next((ln for ln in output.splitlines() if ln.startswith("MoodLens cannot start: ")), None)
    assert line is not None and message in line and str(model) in line, output
    assert "Traceback" not in output
    assert server.proc is None
