"""The two ways to serve MoodLens refuse to start, with one clear line, when the model is unusable."""
from __future__ import annotations

import pytest

from tests.browser import SERVER_MODES, ServerError, ServerProcess

# gunicorn's worker exits with 4 ("app failed to load") so the master stops
# instead of restarting it; ``python -m app`` exits with 1.
EXIT_CODES = {"threading": 4, "eventlet": 1}


@pytest.mark.parametrize("mode", SERVER_MODES)
@pytest.mark.parametrize(("problem", "name", "message"), [
    ("missing", "emotion.int8.tflite", "emotion model not found"),
    ("unreadable", "emotion.keras", "is unreadable"),
    ("unreadable", "emotion.int8.tflite", "is unreadable"),
])
def test_server_refuses_to_start_without_a_usable_model(tmp_path, mode, problem, name, message):
    model = tmp_path / name
    if problem == "unreadable":
        model.write_bytes(b"this is not a model file")
    server = ServerProcess(mode, workdir=tmp_path, model_path=model, startup_timeout=90)
    with pytest.raises(ServerError) as failed:
        server.start()
    assert failed.value.exit_code == EXIT_CODES[mode], failed.value
    output = failed.value.output
    line = next((ln for ln in output.splitlines() if ln.startswith("MoodLens cannot start: ")), None)
    assert line is not None and message in line and str(model) in line, output
    assert "Traceback" not in output
    assert server.proc is None


@pytest.mark.parametrize("name", ["emotion.keras", "emotion.int8.tflite"])
def test_an_empty_model_file_is_named_as_empty(tmp_path, name):
    """A copy cut short leaves a file of no bytes: the message says so instead of the reader's riddle."""
    from app.vision.emotions import EmotionModel, ModelLoadError

    model = tmp_path / name
    model.touch()
    with pytest.raises(ModelLoadError, match=r"is empty \(0 bytes\)") as refused:
        EmotionModel.load(model)
    assert str(model) in str(refused.value)


def python_script(script: str, timeout: float = 180):
    """Run ``script`` in a fresh Python (a process of its own: what it imports, it alone has loaded)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, check=False)


def test_tensorflow_op_threads_are_set_before_the_first_op_and_fixed_after():
    """``set_op_threads`` applies before TensorFlow runs anything, and says so when it is too late."""
    script = (
        "import tensorflow as tf\n"
        "from app.vision.emotions import set_op_threads\n"
        "assert set_op_threads(1) and tf.config.threading.get_intra_op_parallelism_threads() == 1\n"
        "tf.constant(1.0) + 1.0\n"
        "assert set_op_threads(1) and not set_op_threads(2)\n"
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1\n"
        "print('ok')\n"
    )
    done = python_script(script, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_server_of_the_shipped_model_never_loads_tensorflow():
    """The int8 model is served by LiteRT's interpreter: TensorFlow (seconds of start-up, about 500 MiB) is not
    imported, and the threads-per-op setting reaches the interpreters."""
    script = (
        "import sys, os\n"
        "from app import create_app\n"
        "from tests.conftest import FACES\n"
        "app = create_app({'TESTING': True, 'TF_INTRA_OP_THREADS': 1})\n"
        "model = app.extensions['emotion_model']\n"
        "assert model.backend == 'tflite', model.backend\n"
        "with open(FACES / 'astronaut.png', 'rb') as fh:\n"
        "    body = app.test_client().post('/api/v1/analyze', data={'image': (fh, 'a.png')}).get_json()\n"
        "assert body['faces'][0]['label'] == 'happy', body\n"
        "# one thread per op: as many interpreters per batch size as cores, so calls run side by side\n"
        "assert len(model._runners[1]._idle) == (os.cpu_count() or 1), len(model._runners[1]._idle)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = python_script(script)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "False False", done.stdout[-2000:]


def test_op_threads_set_before_tensorflow_loads_apply_when_a_keras_model_loads_it():
    script = (
        "import sys\n"
        "from app.vision.emotions import EmotionModel, set_op_threads\n"
        "from tests.conftest import FLOAT_MODEL\n"
        "assert set_op_threads(1) and 'tensorflow' not in sys.modules\n"
        "EmotionModel.load(FLOAT_MODEL, batch_sizes=(1,))\n"
        "import tensorflow as tf\n"
        "assert tf.config.threading.get_intra_op_parallelism_threads() == 1\n"
        "assert set_op_threads(1) and not set_op_threads(2)\n"
        "print('ok')\n"
    )
    done = python_script(script)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_apps_own_log_lines_go_to_stdout_in_one_format():
    """Flask's app logger and the recogniser's loggers write to stdout in one format, as the README says."""
    script = (
        "from app import create_app\n"
        "import logging\n"
        "app = create_app({'TESTING': True})\n"
        "logging.getLogger('moodlens.live.transport').warning('transport line')\n"
    )
    done = python_script(script)
    assert done.returncode == 0, done.stderr[-2000:]
    ready = [line for line in done.stdout.splitlines() if "MoodLens ready" in line]
    assert len(ready) == 1 and " INFO app: MoodLens ready: model " in ready[0], done.stdout[-2000:]
    assert any(line.endswith(" WARNING moodlens.live.transport: transport line") for line in done.stdout.splitlines())
    assert "MoodLens ready" not in done.stderr and "transport line" not in done.stderr


def test_the_app_sets_tensorflow_op_threads_from_its_configuration(monkeypatch):
    from app.config import ConfigError
    from app.vision import emotions
    from tests.conftest import make_app

    asked = []
    monkeypatch.setattr(emotions, "set_op_threads", lambda n: asked.append(n) or True)
    make_app()
    make_app(TF_INTRA_OP_THREADS=0)
    assert asked == [1, 0]  # one thread per op by default
    with pytest.raises(ConfigError, match="TF_INTRA_OP_THREADS"):
        make_app(TF_INTRA_OP_THREADS=-1)


@pytest.mark.parametrize("port", ["http", "0", "70000", "８０"])
def test_python_m_app_refuses_a_port_that_is_not_one(port, monkeypatch, capsys):
    from app.__main__ import main

    monkeypatch.setenv("PORT", port)
    assert main([]) == 1
    assert f"MoodLens cannot start: PORT must be a port number from 1 to 65535, got {port!r}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, code, says", [
    (["--help"], 0, "Every setting is an environment variable"),
    (["--port", "9000"], 2, "unrecognized arguments: --port 9000"),
])
def test_python_m_app_answers_help_and_refuses_options_without_serving(argv, code, says, monkeypatch, capsys):
    import app as package
    from app.__main__ import main

    monkeypatch.setattr(package, "create_app", lambda: pytest.fail("--help must not load the model or serve"))
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == code
    out = capsys.readouterr()
    assert says in out.out + out.err
