"""The real pages across a server restart: the student page and the dashboard reconnect by themselves.

Headless Chromium with a fake camera; the production server restarted on the
same port in the middle of a class (SQLite in its instance folder, as
``make run``). Nothing stored before the restart is lost.
"""
from __future__ import annotations

import pytest

from tests.browser import ServerProcess, make_fake_camera
from tests.conftest import require

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SECONDS = 1000


def test_pages_reconnect_and_the_dashboard_resumes_after_a_server_restart(tmp_path, model_copy,
                                                                          browser_factory, faces_dir):
    from tests.test_classroom_e2e import open_student, open_teacher

    camera = make_fake_camera(require(faces_dir / "obama.jpg"), tmp_path / "obama.y4m")
    server = ServerProcess("threading", workdir=tmp_path / "server", model_path=model_copy,
                           env={"CLASSROOM_PUSH_SECONDS": "1.0"})
    server.start()
    try:
        teacher_ctx, board, code = open_teacher(browser_factory(), server.url)
        alice, _problems = open_student(browser_factory(camera), server.url, code, "Alice")
        expect(board.locator("#kpi-students")).to_have_text("1", timeout=20 * SECONDS)
        export = lambda: teacher_ctx.request.get(f"{server.url}/classes/{code}/export.csv").text().splitlines()  # noqa: E731
        expect(board.locator("#tiles .tile[data-status=active]")).to_have_count(1, timeout=15 * SECONDS)
        board.wait_for_timeout(3000)  # a few stored seconds
        before = export()
        assert len(before) > 2

        server.stop()
        server.start()  # same port, same database

        # Without a click: the dashboard shows Alice live again, her page shares and is answered again.
        updates = int(board.get_attribute("#board", "data-updates") or 0)
        expect(board.locator("#board")).to_have_attribute("data-state", "live", timeout=30 * SECONDS)
        board.wait_for_function(f"() => Number(document.getElementById('board').dataset.updates) > {updates + 2}",
                                timeout=30 * SECONDS)
        expect(board.locator("#tiles .tile[data-status=active]")).to_have_count(1, timeout=30 * SECONDS)
        expect(board.locator("#kpi-students")).to_have_text("1", timeout=30 * SECONDS)
        expect(alice.locator("#sharing")).to_have_attribute("data-state", "on", timeout=30 * SECONDS)
        after = export()
        assert after[:len(before) - 1] == before[:len(before) - 1] and len(after) > len(before)
    finally:
        server.stop()
