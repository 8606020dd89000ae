"""Running a command-line entry point in-process and capturing what it prints."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable


def run_main(main: Callable[[list[str]], int], *args) -> tuple[int, str, str]:
    """Call ``main(argv)`` with the arguments as strings; return (exit status, stdout, stderr).

    argparse's own errors (``SystemExit``) come back as their exit status, like a shell would see them.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()
