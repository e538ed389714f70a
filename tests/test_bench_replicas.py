"""The benchmark on PostgreSQL with two replicas, at a tiny N: both bots take their share of the
burst, every number is dialled exactly once across them, the run's schema is gone afterwards; the
report's database and replica columns; and no child left running when the bench process is killed.

Counts only: how long anything took is the benchmark's business, never a test's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.databases import POSTGRESQL, SQLITE, fresh_database
from bench.processes import REPO_ROOT
from bench.report import markdown
from bench.runner import Options, run_benchmark
from tests.databases import postgres_url
from tests.processes import one_ca_certificate

N = 6
# Seconds the voice API stand-in takes to answer a POST, and the bare app's work after its ack:
# each run waits it out three times (the warm-up's calls, the burst's, the bare app's).
DELAY = 0.02


@pytest.fixture(autouse=True)
def one_ca_certificate_for_the_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's processes (bots, bare apps, stand-ins) take this process's environment: see
    tests/processes.py `with_one_ca_certificate`."""
    monkeypatch.setenv("SSL_CERT_FILE", one_ca_certificate())


async def test_two_replicas_on_postgresql_share_the_burst_and_dial_each_number_once(
    tmp_path: Path,
) -> None:
    # The stand-ins in the bench process (`--standins inline`): tests/test_bench.py runs them in a
    # process of their own, and each one costs a Python start; so does the bare Bolt app, whose
    # runs beside the bot's tests/test_bench.py covers.
    options = Options(delay=DELAY, standins="inline", logs=tmp_path / "logs",
                      postgres_url=postgres_url(), bare=False)

    results = await run_benchmark(["socket", "http"], [N], options, databases=[POSTGRESQL],
                                  replicas=[2])

    assert [(r["mode"], r["database"], r["replicas"]) for r in results["runs"]] == [
        ("socket", POSTGRESQL, 2), ("http", POSTGRESQL, 2)]
    for run in results["runs"]:
        bot = run["bot"]
        assert bot["ack"]["sent"] == bot["ack"]["acked"] == N
        assert bot["posts"] == bot["posts_distinct"] == N
        assert bot["outcomes"] == bot["confirmations"] == N
        commands = [replica["commands"] for replica in bot["per_replica"]]
        assert sum(commands) == N and min(commands) > 0, (run["mode"], commands)
        assert [replica["exit_code"] for replica in bot["per_replica"]] == [0, 0]
        assert all(replica["rss_peak_mb"] > 0 for replica in bot["per_replica"])
        assert bot["database_cpu_s"] >= 0


async def test_a_runs_postgresql_schema_is_its_own_and_dropped_afterwards(tmp_path: Path) -> None:
    server = postgres_url()
    async with fresh_database(POSTGRESQL, tmp_path, server) as database:
        bot = await asyncpg.connect(database.url)  # as the bot opens it
        try:
            schema = await bot.fetchval("SELECT current_schema()")
            await bot.execute("CREATE TABLE t (x int)")
            assert await database.server_cpu() != {}  # the bot's connection, by its name
        finally:
            await bot.close()
        assert schema.startswith("bench_")
    admin = await asyncpg.connect(server)
    try:
        assert await admin.fetchval("SELECT to_regnamespace($1)", schema) is None
    finally:
        await admin.close()


async def test_sqlite_is_a_file_in_the_runs_directory(tmp_path: Path) -> None:
    async with fresh_database(SQLITE, tmp_path, "postgresql://unused") as database:
        assert database.url == f"sqlite:///{tmp_path / 'callbot.db'}"
        assert await database.server_cpu() == {}


def _bot(rss_peak: list[float], database_cpu: float = 0.0) -> dict[str, Any]:
    replicas = [{"rss_idle_mb": 60.0, "rss_peak_mb": peak, "commands": 1, "exit_code": 0}
                for peak in rss_peak]
    return {
        "startup_s": 1.0, "ack": {"p50_ms": 10.0, "p99_ms": 20.0, "max_ms": 30.0, "late": 0},
        "dial": {"p50_ms": 40.0, "p99_ms": 50.0, "max_ms": 60.0},
        "posts": 1000, "posts_distinct": 1000, "confirmations": 1000, "cpu_s": 9.0,
        "cpu_ms_per_call": 9.0, "dial_cpu_ms_per_call": 5.0, "database_cpu_s": database_cpu,
        "others_cpu_s": 0.0, "rss_idle_mb": 60.0, "rss_peak_mb": max(rss_peak),
        "per_replica": replicas,
    }


def _run(bot: dict[str, Any], **setup: Any) -> dict[str, Any]:
    bare = {"ack": {"p99_ms": 10.0}}
    return {"mode": "socket", "n": 1000, "slack_latency_s": 0.0, "load_before": 1.0,
            "bot": bot, "bare": bare, "ratio_p99": 2.0, **setup}


def test_the_report_names_each_runs_database_and_replicas() -> None:
    saved_before_replicas = _run(_bot([83.0]))  # a JSON saved before the options existed
    del saved_before_replicas["bot"]["per_replica"], saved_before_replicas["bot"]["database_cpu_s"]
    results = {
        "date": "2026-11-29T22:00:00+00:00", "commit": "abc1234",
        "machine": {"cpus": 2, "cpu_model": "CPU", "python": "3.11", "system": "Linux"},
        "options": {"delay_s": 2.0, "standins": "process"},
        "runs": [saved_before_replicas,
                 _run(_bot([80.0, 82.0], database_cpu=3.0) | {"dial_loop_cpu_ms_per_call": 3.5},
                      database=POSTGRESQL, replicas=2),
                 _run(_bot([80.0, 82.0]), database=POSTGRESQL, replicas=2) | {  # Options.bare off
                     "bare": None, "ratio_p99": None}],
    }

    text = markdown(results)

    rows = [line for line in text.splitlines() if line.startswith("| socket |")]
    assert rows[0].startswith("| socket | sqlite | 1 | 1,000 |")
    assert "| – | 60 / 83 |" in rows[0]  # no PostgreSQL CPU; one replica's memory
    assert rows[1].startswith("| socket | postgresql | 2 | 1,000 |")
    assert "| 3.0 | 60 + 60 / 80 + 82 |" in rows[1]  # 3 CPU-s over 1,000 calls; each replica
    # CPU per call up to the last POST, the event loops' part of it in brackets (when measured).
    assert "| 5.0 / 9.0 |" in rows[0]
    assert "| 5.0 (3.5) / 9.0 |" in rows[1]
    assert "| 0 | – | – |" in rows[2]  # no bare Bolt app run beside it: no p99 of its own, no ratio
    assert "socket, postgresql × 2: POSTs/distinct numbers: 1,000/1,000" in text
    assert "socket: POSTs/distinct numbers: 1,000/1,000" in text


# A bench process in miniature: it starts a child as the benchmark starts the bot (bench.processes),
# says the child's pid, and waits to be killed.
_PARENT = """
import asyncio, os, sys
from pathlib import Path
from bench.processes import Child

async def main() -> None:
    work = Path(sys.argv[1])
    child = Child("http.server", dict(os.environ), cwd=work, log_path=work / "child.log",
                  args=["--bind", "127.0.0.1", "0"])
    await child.start()
    print(child.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (nobody may reap an orphan in a container)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_killed_bench_process_leaves_no_child_running(tmp_path: Path) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _PARENT, str(tmp_path), cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=asyncio.subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int(await asyncio.wait_for(parent.stdout.readline(), 30))
    assert _running(child)

    parent.kill()  # no finally, no stop(): as a test's timeout or a kill -9 ends a run
    await parent.wait()

    for _ in range(300):
        if not _running(child):
            break
        await asyncio.sleep(0.1)
    outlived = _running(child)
    if outlived:
        os.kill(child, signal.SIGKILL)  # not left behind by a failing test either
    assert not outlived, f"pid {child} outlived the bench process"
