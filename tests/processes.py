"""`python -m bot` in a process of its own, for what only a real process shows: signals, exit codes,
its output, two replicas sharing a database.

A bot process listens on a port the kernel picked (PORT=0) and found in its own log: a port picked
as free by the test and handed to the bot could be taken meanwhile on a busy machine (by another
test's bot, under pytest-xdist) and then answer for a bot that is not this one.

Each test process forks its bots from a zygote that imported the bot once (tests/zygote.py): the
same code, arguments, environment and folder, a process of its own, without paying 0.65 CPU-s of
imports forty times over. `CALLBOT_TEST_EXEC=1` starts every one with `python -m bot` instead, as
does a bot run under another program (`argv_prefix`).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The line the bot logs once it listens (bot/runtime.py), in either LOG_FORMAT.
_LISTENING = re.compile(r"listening on port (\d+)")
_PEM_END = "-----END CERTIFICATE-----\n"


def port_no_other_socket_takes() -> int:
    """A free loopback port below the kernel's ephemeral range (32768 and up on Linux), for a
    process that must be told its port (`callbot demo`'s PORT): the ports the kernel hands out
    meanwhile (another test's server on port 0, an outgoing connection) are never this one."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port between 20000 and 32000")


@functools.cache
def one_ca_certificate() -> str:
    """A CA file holding certifi's first certificate (see `with_one_ca_certificate`), removed when
    this process exits."""
    import certifi

    bundle = Path(certifi.where()).read_text(encoding="ascii")
    folder = Path(tempfile.mkdtemp(prefix="callbot-tests-ca-"))
    path = folder / "one-ca.pem"
    path.write_text(bundle[: bundle.index(_PEM_END) + len(_PEM_END)], encoding="ascii")
    atexit.register(shutil.rmtree, folder, True)
    return str(path)


def with_one_ca_certificate(env: dict[str, str]) -> dict[str, str]:
    """`env` for a Python process a test starts, with SSL_CERT_FILE naming a CA file of one
    certificate.

    Such a process speaks plain HTTP to loopback stand-ins only, yet at start-up aiohttp loads the
    system's CA bundle twice (at import) and the Evo Voice client certifi's once: a quarter of the
    CPU of starting `python -m bot` (750 of 3,000 million instructions, callgrind). OpenSSL, aiohttp
    and httpx all read SSL_CERT_FILE, and one certificate loads at once."""
    return {**env, "SSL_CERT_FILE": one_ca_certificate()}


def _without_callbot_settings() -> dict[str, str]:
    """This process's environment less the machine's own callbot settings, with a CA file of one
    certificate (`with_one_ca_certificate`)."""
    return with_one_ca_certificate({
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_", "DATABASE_"))
    })


async def run_bot_process(
    env: dict[str, str],
    cwd: Path,
    output: Path | None = None,
    *,
    args: list[str] | None = None,
    argv_prefix: list[str] | None = None,
) -> asyncio.subprocess.Process | ForkedBot:
    """`python -m bot [args]` as a deployment runs it (from an empty folder: no stray .env is
    read), with `env`, none of the machine's own callbot settings, and a CA file of one
    certificate (`with_one_ca_certificate`); forked from this process's zygote (see the module's
    documentation) unless `CALLBOT_TEST_EXEC=1` or `argv_prefix`.

    Its output is piped, or written to `output` (for a bot nobody reads while it runs);
    `argv_prefix` runs it under another program (e.g. `unshare`)."""
    full_env = _without_callbot_settings()
    full_env.update(env)
    if not argv_prefix and os.environ.get("CALLBOT_TEST_EXEC") != "1":
        return _zygote().fork(args or [], full_env, cwd, output)
    sink: Any = asyncio.subprocess.PIPE if output is None else output.open("wb")
    process = await asyncio.create_subprocess_exec(
        *(argv_prefix or []),
        sys.executable,
        "-m",
        "bot",
        *(args or []),
        env=full_env,
        cwd=cwd,
        stdout=sink,
        stderr=sink if output is None else asyncio.subprocess.STDOUT,
    )
    if output is not None:
        sink.close()  # the bot has its own copy
    return process


class ForkedBot:
    """A bot the zygote forked, seen as an `asyncio.subprocess.Process` is: `pid`, `returncode`
    (None while it runs; minus the signal that ended it), `wait()`, `send_signal()`, `kill()`,
    `communicate()` (its output, when piped, is read as it comes, so it never blocks writing)."""

    def __init__(self, pid: int, status: int, pipes: tuple[int, int] | None) -> None:
        self.pid = pid
        self._status = status
        self._code: int | None = None
        self._output: list[asyncio.Task[bytes]] = []
        if pipes is not None:
            self._output = [asyncio.ensure_future(_read_to_end(fd)) for fd in pipes]

    @property
    def returncode(self) -> int | None:
        if self._code is None:
            try:
                written = os.read(self._status, 32)
            except BlockingIOError:
                return None
            os.close(self._status)
            if not written:
                raise RuntimeError(f"the zygote ended before bot process {self.pid} did")
            self._code = int(written)
        return self._code

    async def wait(self) -> int:
        while (code := self.returncode) is None:
            await _readable(self._status)
        return code

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def communicate(self) -> tuple[bytes, bytes]:
        assert self._output, "its output was not piped"
        stdout, stderr = await asyncio.gather(*self._output)
        await self.wait()
        return stdout, stderr


class ForkedModule(ForkedBot):
    """A module of the tests' own forked by the zygote (`run_test_module`), seen as an
    `asyncio.subprocess.Process` whose three streams are piped: `stdin`, `stdout`, `stderr`."""

    def __init__(self, pid: int, status: int, stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                 transports: list[asyncio.BaseTransport]) -> None:
        super().__init__(pid, status, None)
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self._transports = transports

    async def communicate(self) -> tuple[bytes, bytes]:
        stdout, stderr = await asyncio.gather(self.stdout.read(), self.stderr.read())
        await self.wait()
        return stdout, stderr

    def close(self) -> None:
        """Its pipes, at the end of the test (the process itself is not waited for)."""
        for transport in self._transports:
            transport.close()


async def run_test_module(
    module: str, *args: str, cwd: Path
) -> ForkedModule | asyncio.subprocess.Process:
    """`python -m MODULE ARGS` (a module of tests/ using the bot's) with this process's
    environment and its streams piped, forked from the zygote unless `CALLBOT_TEST_EXEC=1`."""
    if os.environ.get("CALLBOT_TEST_EXEC") == "1":
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=cwd, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    pid, status, (out, err), stdin = _zygote().fork_module(module, list(args), cwd)
    loop = asyncio.get_running_loop()
    readers: list[asyncio.StreamReader] = []
    transports: list[asyncio.BaseTransport] = []
    for fd in (out, err):
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda reader=reader: asyncio.StreamReaderProtocol(reader),  # type: ignore[misc]
            _pipe(fd, "rb"))
        readers.append(reader)
        transports.append(transport)
    sending, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, _pipe(stdin, "wb"))
    transports.append(sending)
    writer = asyncio.StreamWriter(sending, protocol, None, loop)
    return ForkedModule(pid, status, writer, readers[0], readers[1], transports)


def _pipe(fd: int, mode: str) -> Any:
    """A file over the end of a pipe, for the event loop's pipe transports (no disk to wait on)."""
    return open(fd, mode, buffering=0)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _read_to_end(fd: int) -> bytes:
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                await _readable(fd)
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class _Zygote:
    """This process's zygote (tests/zygote.py), started the first time a bot is."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._socket = ours
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py")), str(theirs.fileno())],
            pass_fds=[theirs.fileno()], env=_without_callbot_settings(),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        atexit.register(self.close)

    def alive(self) -> bool:
        return self._process.poll() is None

    def fork(self, args: list[str], env: dict[str, str], cwd: Path, output: Path | None
             ) -> ForkedBot:
        pid, status_r, pipes = self._fork("bot", args, env, cwd, output)
        return ForkedBot(pid, status_r, pipes)

    def fork_module(self, module: str, args: list[str], cwd: Path
                    ) -> tuple[int, int, tuple[int, int], int]:
        """`python -m MODULE ARGS` with this process's environment: its pid, its status pipe,
        its stdout and stderr pipes and its stdin (the write end of each: non-blocking)."""
        stdin_r, stdin_w = os.pipe()
        os.set_blocking(stdin_w, False)
        try:
            pid, status_r, pipes = self._fork(module, args, dict(os.environ), cwd, None, stdin_r)
        finally:
            os.close(stdin_r)
        assert pipes is not None
        return pid, status_r, pipes, stdin_w

    def _fork(self, module: str, args: list[str], env: dict[str, str], cwd: Path,
              output: Path | None, stdin: int | None = None
              ) -> tuple[int, int, tuple[int, int] | None]:
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        if output is None:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            given, pipes = [out_w, err_w, status_w], (out_r, err_r)
            for fd in pipes:
                os.set_blocking(fd, False)
        else:
            with output.open("wb") as sink:
                log = os.dup(sink.fileno())
            given, pipes = [log, log, status_w], None
        try:
            request = json.dumps({"module": module, "args": args, "env": env, "cwd": str(cwd)})
            socket.send_fds(self._socket, [request.encode()],
                            given if stdin is None else [*given, stdin])
            pid = json.loads(self._socket.recv(4096))["pid"]
        finally:
            for fd in set(given):
                os.close(fd)
        return pid, status_r, pipes

    def close(self) -> None:
        self._socket.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()


_zygotes: list[_Zygote] = []


def _zygote() -> _Zygote:
    if not _zygotes or not _zygotes[-1].alive():
        _zygotes.append(_Zygote())
    return _zygotes[-1]


async def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """`python -m bot ARGS` to its end: its exit code, stdout and stderr."""
    process = await run_bot_process(env, cwd, args=args)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@dataclass
class BotProcess:
    """A running `python -m bot` whose output goes to `log`."""

    process: asyncio.subprocess.Process | ForkedBot
    log: Path
    port: int = 0

    @classmethod
    async def start(cls, env: dict[str, str], cwd: Path, name: str = "bot") -> BotProcess:
        """Start it on a port of the kernel's choosing; return once it listens there."""
        running = await cls.launch(env, cwd, name)
        await running.listening()
        return running

    @classmethod
    async def launch(cls, env: dict[str, str], cwd: Path, name: str = "bot") -> BotProcess:
        """Start it on a port of the kernel's choosing; `listening()` waits for that port."""
        log = cwd / f"{name}.log"
        return cls(await run_bot_process({**env, "PORT": "0"}, cwd, output=log), log)

    async def listening(self) -> int:
        """The port it listens on, once it does (it opens its database first)."""
        [port] = await self.wait_for_line(_LISTENING)
        self.port = int(port)
        return self.port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 60) -> list[str]:
        """Wait until the log has a line matching `pattern`; its groups. Fails if the bot exits."""
        found = re.compile(pattern) if isinstance(pattern, str) else pattern
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            match = found.search(self.output())
            if match:
                return list(match.groups())
            if self.process.returncode is not None:
                pytest.fail(f"the bot exited ({self.process.returncode}): {self.output()[-3000:]}")
            if loop.time() > deadline:
                pytest.fail(f"the bot never logged {found.pattern!r}: {self.output()[-3000:]}")
            await asyncio.sleep(0.05)

    def send(self, number: int = signal.SIGTERM) -> None:
        if self.process.returncode is None:
            self.process.send_signal(number)

    async def stop(self, number: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `number` (unless it has exited) and wait for the exit; its code."""
        self.send(number)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise
