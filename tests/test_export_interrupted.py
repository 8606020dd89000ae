"""A CSV export the database fails part-way through shows as a failed download, never as a shorter file.

The export streams (its 200 and headers go out before the last rows are read), so
a database error after the first pages cannot become an error page. Against the
production server (gunicorn, SQLite as ``make run``): the connection must end
without the chunked body's last chunk, which browsers and HTTP clients report as
a failed download, and the server must go on serving.
"""
from __future__ import annotations

import sqlite3
import time

import pytest
import requests

from benchmarks.classroom_load import create_class, join
from tests.browser import ServerProcess

pytestmark = pytest.mark.slow
ROWS = 200_000  # seconds of one student: ~20 MB of class CSV, far more than the sockets' buffers hold


def test_an_export_cut_by_a_database_error_ends_as_a_broken_download(tmp_path, model_copy):
    server = ServerProcess("threading", workdir=tmp_path / "server", model_path=model_copy)
    server.start()
    try:
        teacher, code = create_class(server.url)
        join(server.url, code, "Sam")
        db = sqlite3.connect(server.workdir / "moodlens.db")
        (student, session), = db.execute("SELECT id, session_id FROM student").fetchall()
        start = int(time.time()) - ROWS
        db.executemany("INSERT INTO mood_sample VALUES (?, ?, ?, 10, 10, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1)",
                       ((student, start + i, session) for i in range(ROWS)))
        db.commit()

        resp = teacher.get(f"{server.url}/classes/{code}/export.csv", stream=True, timeout=60)
        assert resp.status_code == 200 and resp.headers.get("Transfer-Encoding") == "chunked", resp.headers
        chunks = resp.iter_content(64 * 1024)
        received = len(next(chunks))  # the server now waits on the socket, part-way through the rows
        db.execute("DROP TABLE mood_sample")  # its next page's query fails
        db.commit()
        db.close()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in chunks:
                received += len(chunk)
        assert 0 < received < ROWS * 60  # cut part-way (each row is about 100 bytes)

        assert requests.get(f"{server.url}/", timeout=10).status_code == 200  # the server goes on serving
        assert "no such table: mood_sample" in server.log_text()  # and says why the download broke
    finally:
        server.stop()
