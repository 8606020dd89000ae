"""scripts/audit.py: how pip-audit's report becomes an exit code (the real run needs the network)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import audit  # noqa: E402


def fake_pip_audit(monkeypatch, dependencies):
    def run(cmd, **_kw):
        assert cmd[1:3] == ["-m", "pip_audit"] and "--format" in cmd
        return subprocess.CompletedProcess(cmd, 1, stdout=json.dumps({"dependencies": dependencies, "fixes": []}),
                                           stderr="")

    monkeypatch.setattr(audit.subprocess, "run", run)


CLEAN = {"name": "flask", "version": "3.1.3", "vulns": []}
SKIPPED = {"name": "numpy", "version": "2.4.6", "skip_reason": "Dependency not found on PyPI and could not be audited"}
VULNERABLE = {"name": "werkzeug", "version": "0.1", "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["3.0.6"]}]}


@pytest.mark.parametrize("deps, strict, code, says", [
    ([CLEAN, CLEAN], False, 0, "ok: 2 packages audited"),
    ([CLEAN, VULNERABLE], False, 1, "werkzeug==0.1: PYSEC-0000-1 (fixed in: 3.0.6)"),
    ([SKIPPED, SKIPPED], False, 0, "NOT DONE"),
    ([SKIPPED, SKIPPED], True, 2, "NOT DONE"),
    ([CLEAN, SKIPPED], True, 0, "1 not on the index: numpy"),
])
def test_audit_exit_codes(monkeypatch, capsys, deps, strict, code, says):
    fake_pip_audit(monkeypatch, deps)
    assert audit.main(["--strict"] if strict else []) == code
    out = capsys.readouterr()
    assert says in out.out + out.err
