"""Child processes under test: start, wait until ready, read their memory, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0


PR_SET_PDEATHSIG = 1  # prctl(2), Linux


class ProcessFailed(RuntimeError):
    pass


def die_with_parent() -> None:
    """In a child, before it runs Python: SIGTERM when the bench process dies, so a run killed
    half-way (a test's timeout, a kill) leaves no bot or stand-in running on a shared machine."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Memory:
    rss: int  # VmRSS, bytes: resident now
    hwm: int  # VmHWM, bytes: the peak resident size so far


def memory_of(pid: int) -> Memory:
    """From /proc/<pid>/status (Linux)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return Memory(rss=fields["VmRSS"], hwm=fields["VmHWM"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    return _stat_cpu(f"/proc/{pid}/stat")


def loop_cpu_seconds(pid: int) -> float:
    """The same for the process's main thread alone: the bot's event loop (its database thread and
    the default executor's threads left out)."""
    return _stat_cpu(f"/proc/{pid}/task/{pid}/stat")


def _stat_cpu(path: str) -> float:
    with open(path, encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the host's processes used (all cores), plus what the hypervisor took (steal).

    From /proc/stat. Interrupt time is left out: the burst's own loopback traffic is handled there,
    charged to no process.
    """
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields[:8]
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


class Child:
    """`python -m <module>` with its stderr in a log file; stdout piped when `read_stdout`."""

    def __init__(self, module: str, env: dict[str, str], *, cwd: Path, log_path: Path,
                 args: list[str] | None = None, read_stdout: bool = False,
                 write_stdin: bool = False) -> None:
        self.module = module
        self.env = dict(env)
        # The bench package and the stand-ins import from the repository, whatever the cwd.
        self.env["PYTHONPATH"] = str(REPO_ROOT) + (
            ":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        self.cwd = cwd
        self.log_path = log_path
        self.args = args or []
        self.read_stdout = read_stdout
        self.write_stdin = write_stdin
        self.proc: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.module, *self.args,
            env=self.env, cwd=self.cwd,
            stdin=asyncio.subprocess.PIPE if self.write_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if self.read_stdout else asyncio.subprocess.DEVNULL,
            stderr=self._log,
            limit=64 * 1024 * 1024,  # one JSON line carries a whole burst's records
            preexec_fn=die_with_parent,
        )

    def memory(self) -> Memory:
        return memory_of(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failed(self, what: str) -> ProcessFailed:
        code = self.proc.returncode if self.proc else None
        return ProcessFailed(
            f"{self.module} {what} (exit code {code}); last lines of {self.log_path}:\n"
            + self.log_tail()
        )

    async def listening_port(self, timeout: float = READY_TIMEOUT_SECONDS) -> int:
        """The port a bot started with PORT=0 listens on, from its log line `listening on port N`
        (a port picked as free beforehand could be taken meanwhile by another process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on port (\d+)", self.log_tail(lines=1000))
            if found:
                return int(found.group(1))
            if not self.alive():
                raise self.failed("exited before it listened")
            await asyncio.sleep(0.01)
        raise self.failed(f"was not listening within {timeout:.0f} s")

    async def wait_healthy(self, url: str, timeout: float = READY_TIMEOUT_SECONDS) -> float:
        """Poll `url` until it answers 200; return the seconds since start()."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise self.failed("exited before it was ready")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return time.monotonic() - self.started_at
                await asyncio.sleep(0.01)
        raise self.failed(f"was not ready within {timeout:.0f} s")

    async def read_line(self, timeout: float = READY_TIMEOUT_SECONDS) -> str:
        """The next line the child printed on stdout (its way of saying it is ready)."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise self.failed(f"said nothing within {timeout:.0f} s") from None
        if not line:
            await self.proc.wait()
            raise self.failed("exited before it was ready")
        return line.decode().strip()

    async def write_line(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def stop(self) -> int | None:
        """SIGTERM (the bot finishes in-flight work), then SIGKILL if it takes too long."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode
