"""`python -m bot`'s entry point, `bot.__main__.main(argv)`, called in this process.

For what the entry point decides (its exit code, the lines it prints) without the ~0.4 s of CPU a
`python -m bot` spends starting. What only a real process shows (signals, two replicas, a mount
namespace, `python -m bot` itself) stays in tests/processes.py, and each entry path keeps one test
there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest

from bot.__main__ import main


def run_main(
    argv: list[str], env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], *, deadline: float = 60,
) -> tuple[int, str, str]:
    """`main(argv)` in `cwd` with `env` and none of the machine's own callbot settings, as
    tests/processes.py runs `python -m bot`: its exit code, stdout and stderr.

    Call it from a test that is not a coroutine for an action that runs an event loop of its own
    (`run`, `check`, `migrate-db`, `demo`): `run` takes SIGTERM while it serves. A bot that goes
    on serving instead of stopping gets that SIGTERM after `deadline` seconds (and returns 0), so
    the test fails instead of hanging."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_", "DATABASE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    # main() configures logging for the whole process; give pytest back its own afterwards.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {
        name: logger.level for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    timer = threading.Timer(deadline, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = main(argv)
    finally:
        timer.cancel()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in loggers.items():
            logging.getLogger(name).setLevel(old)
    out, err = capsys.readouterr()
    return code, out, err
