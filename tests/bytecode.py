"""Bytecode written once, before pytest-xdist starts its workers (a plugin of tests/conftest.py).

On a fresh clone (CI) there is none: every worker, started at the same moment, compiles bot/ and
rewrites the asserts of every test module it collects, and writes the same files as the others.
That is 5 CPU-s of work done once per worker: with 6 workers on 2 cores, 20 CPU-s more than a
second run of the same tests, and a quarter of a minute before the first test starts. The main
process, which runs no test, does it once before it starts them; when the files are there
already, checking them costs it 0.15 CPU-s.

The asserts are rewritten by pytest's own functions, as a worker would rewrite them (the worker
then finds the cached module and checks it against the source's hash, as after any earlier run).
They are not public: should they change, this does nothing and the workers rewrite as before.
"""

from __future__ import annotations

import compileall
import fnmatch
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# The modules of tests/conftest.py's `pytest_plugins`: pytest rewrites their asserts too.
PLUGINS = ("database_fixtures.py", "bytecode.py", "tmp_dirs.py")


class Rewritten:
    """Which files of tests/ pytest imports with their asserts rewritten (`search`: as a regular
    expression, for compileall's `rx`, which skips them)."""

    def __init__(self, config: pytest.Config) -> None:
        self.patterns = [*config.getini("python_files"), "conftest.py", *PLUGINS]

    def search(self, path: str) -> bool:
        return any(fnmatch.fnmatch(Path(path).name, pattern) for pattern in self.patterns)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    starts_workers = (
        config.getoption("dist", "no") != "no"
        and not hasattr(config, "workerinput")
        and not config.getoption("collectonly")
    )
    if not starts_workers or sys.dont_write_bytecode:
        return
    rewritten = Rewritten(config)
    compileall.compile_dir(ROOT / "bot", quiet=2)
    compileall.compile_dir(ROOT / "tests", quiet=2, rx=rewritten)
    rewrite_asserts(config, rewritten)


def rewrite_asserts(config: pytest.Config, rewritten: Rewritten) -> None:
    try:
        from _pytest.assertion.rewrite import (
            PYC_TAIL,
            _read_pyc,
            _rewrite_test,
            _write_pyc,
            assertstate_key,
            get_cache_dir,
            try_makedirs,
        )

        state = config.stash[assertstate_key]
    except (ImportError, KeyError):
        return  # another pytest, or asserts left alone (--assert=plain)
    # bot/listeners/test_call.py too: its name is a test module's, and pytest goes by the name.
    for source in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bot").rglob("*.py")]):
        if not rewritten.search(str(source)):
            continue
        cache = get_cache_dir(source)
        if not try_makedirs(cache):
            return  # a read-only clone: the workers can't write either
        pyc = cache / (source.name[:-3] + PYC_TAIL)
        if _read_pyc(source, pyc) is None:
            source_hash, code = _rewrite_test(source, config)
            _write_pyc(state, code, source_hash, pyc)
