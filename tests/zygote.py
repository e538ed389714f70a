"""A process that has imported the bot once and forks a `python -m bot` for each request from the
test process that started it (tests/processes.py), as Android's zygote or multiprocessing's fork
server do.

Importing the bot costs about 0.65 CPU-s (Slack's and Evo Voice's clients, pydantic, aiohttp);
the tests start some forty bot processes, most of them only to start, do one thing and stop. A
forked process is still a process of its own, with its own pid, signals, exit code, output and
database connections, running the code `python -m bot` runs (`runpy`, as `-m` does) with the
environment, working folder and arguments it was asked for. What it does not repeat is reading the
modules from disk, so what only a fresh interpreter shows (an import that fails, a start-up cost)
is tested with `CALLBOT_TEST_EXEC=1`, which starts every bot with `python -m bot`.

The protocol, on a Unix socket pair: the test sends one JSON request (args, env, cwd, and the
module to run, `bot` unless said) with three file descriptors (stdout, stderr, and a pipe for the
exit status) and a fourth for stdin if it has one for the child; the zygote forks, answers with
the child's pid, and writes the child's exit code (negative: the signal that ended it, as
asyncio's `Process.returncode`) into the status pipe once it has ended. End of file on the socket:
the test process is gone, and so is the zygote (its children run on, as they would have).

A module of the tests' own that uses the bot's modules in a process of its own
(tests/spool_processes.py) is forked the same way: `python -m tests.spool_processes` would import
them all again too.

It never starts a thread or an event loop before forking: the children start with neither.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import pkgutil
import runpy
import select
import signal
import socket
import sys
import threading
import traceback

# Modules a bot process never imports (or that need what `[test]` alone does not install).
_NOT_PRELOADED = ("bot.demo.screenshot", "bot.__main__")
_MAX_REQUEST_BYTES = 1 << 20


def preload() -> None:
    import bot

    for module in pkgutil.walk_packages(bot.__path__, "bot."):
        if module.name.startswith(_NOT_PRELOADED):
            continue
        try:
            importlib.import_module(module.name)
        except Exception:  # a bot that needs it imports it (and fails) itself, as python -m would
            pass
    try:
        import asyncpg  # noqa: F401  (a bot on PostgreSQL)
    except ImportError:
        pass


def _child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked process: become `python -m MODULE ARGS` (`bot` unless the request names
    another) and never return."""
    code = 70
    try:
        out, err = fds[0], fds[1]
        os.dup2(out, 1)
        os.dup2(err, 2)
        if len(fds) > 3:
            os.dup2(fds[3], 0)
        for fd in fds:
            os.close(fd)
        os.chdir(str(request["cwd"]))
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        args = request["args"]
        assert isinstance(args, list)
        sys.argv = ["-m", *args]
        sys.path[0] = os.getcwd()  # as `python -m` puts it
        code = 0
        try:
            runpy.run_module(str(request.get("module", "bot")), run_name="__main__",
                             alter_sys=True)
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        # What the interpreter does at exit: join the threads that are not daemons, run atexit.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def serve(control: socket.socket) -> None:
    preload()
    gc.collect()
    gc.freeze()  # what every child shares stays out of their collections (and their copies)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    statuses: dict[int, int] = {}  # child pid -> the write end of its status pipe
    while True:
        try:
            ready, _, _ = select.select([control, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(statuses)
        if control in ready:
            message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST_BYTES, 4)
            if not message:
                return
            request = json.loads(message)
            pid = os.fork()
            if pid == 0:
                control.close()
                for fd in (wake_r, wake_w, *statuses.values()):  # the others' status pipes
                    os.close(fd)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _child(request, fds)
            for fd in (fds[0], fds[1], *fds[3:]):
                os.close(fd)
            statuses[pid] = fds[2]
            control.sendall(json.dumps({"pid": pid}).encode())
            _reap(statuses)


def _reap(statuses: dict[int, int]) -> None:
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(fd)


if __name__ == "__main__":
    # Not this script's folder (tests/, whose modules could shadow others): a child puts its own
    # working folder here, as `python -m` does.
    os.chdir("/")
    sys.path[0] = "/"
    serve(socket.socket(fileno=int(sys.argv[1])))
