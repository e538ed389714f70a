"""The bot processes of one burst: one, or several replicas sharing one database, each started as a
deployment starts it (`python -m bot`, its own port), each with its own sampler (memory, CPU)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.driver import Sampler
from bench.processes import Child, Memory, cpu_seconds, loop_cpu_seconds

MB = 1024 * 1024
COMMANDS_METRIC = "callbot_commands"  # its samples: callbot_commands_total{command, outcome}


async def commands_handled(port: int) -> int:
    """The slash commands a bot has acked so far, from its /metrics (how the burst was spread)."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return sum(int(sample.value) for family in text_string_to_metric_families(text)
               if family.name == COMMANDS_METRIC for sample in family.samples
               if sample.name == f"{COMMANDS_METRIC}_total")


@dataclass
class Replica:
    child: Child
    port: int
    sampler: Sampler
    startup: float = 0.0
    idle: Memory | None = None
    cpu_before: float = 0.0
    loop_cpu_before: float = 0.0
    commands_before: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slack/events"

    async def mark_idle(self) -> None:
        """Before the burst: its memory at rest, its CPU and commands so far."""
        self.idle = self.child.memory()
        self.cpu_before = cpu_seconds(self.child.pid)
        self.loop_cpu_before = loop_cpu_seconds(self.child.pid)
        self.commands_before = await commands_handled(self.port)

    async def measure(self) -> None:
        """After the burst's outcomes, while it still runs: its CPU and memory over the burst,
        the burst's commands it acked."""
        assert self.idle is not None
        end = self.child.memory()
        cpu = cpu_seconds(self.child.pid) - self.cpu_before
        self.figures = {
            "startup_s": round(self.startup, 3),
            "commands": await commands_handled(self.port) - self.commands_before,
            "cpu_s": round(cpu, 2),
            "rss_idle_mb": round(self.idle.rss / MB, 1),
            "rss_in_flight_max_mb": round(self.sampler.max_rss / MB, 1),
            "rss_end_mb": round(end.rss / MB, 1),
            "rss_peak_mb": round(end.hwm / MB, 1),
        }

    def cpu_until(self, moment: float) -> tuple[float, float] | None:
        """Its CPU seconds from the burst's start until `moment` (its first sample after it): all
        of it, and its event loop's."""
        at = self.sampler.cpu_by(moment)
        if at is None:
            return None
        return max(0.0, at[0] - self.cpu_before), max(0.0, at[1] - self.loop_cpu_before)


def create_replicas(
    count: int, *, environment: Callable[[int], dict[str, str]], workdir: Path, logs: Path,
    tag: str, profile_dir: Path | None = None,
) -> list[Replica]:
    """`count` bots, not started: `environment(port)` is each one's environment, for port 0 (the
    port each listens on is read from its log once it is started: `start_replicas`)."""
    replicas: list[Replica] = []
    for index in range(count):
        name = tag if count == 1 else f"{tag}-replica{index + 1}"
        module, args = "bot", []
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            module = "pyinstrument"
            # A session file: `pyinstrument --load FILE` renders it (-r html, -p flat, …).
            args = ["--renderer", "session", "-o", str(profile_dir / f"{name}.pyisession"),
                    "-m", "bot"]
        # PORT=0: each listens where the kernel lets it; its port is read from its log once started.
        child = Child(module, environment(0), cwd=workdir, log_path=logs / f"{name}-bot.log",
                      args=args)
        replicas.append(Replica(child, 0, Sampler(child)))
    return replicas


async def start_replicas(replicas: Sequence[Replica]) -> None:
    """Start them all at once (they migrate the database at the same moment, as replicas of a
    deployment do) and wait until each answers /healthz."""
    for replica in replicas:
        await replica.child.start()
    for replica in replicas:
        replica.port = await replica.child.listening_port()
    startups = await asyncio.gather(*(
        r.child.wait_healthy(f"http://127.0.0.1:{r.port}/healthz") for r in replicas
    ))
    for replica, startup in zip(replicas, startups, strict=True):
        replica.startup = startup


async def stop_replicas(replicas: Sequence[Replica]) -> list[int | None]:
    """Stop the samplers, then SIGTERM every bot at once: their exit codes."""
    for replica in replicas:
        await replica.sampler.stop()
    return list(await asyncio.gather(*(r.child.stop() for r in replicas)))
