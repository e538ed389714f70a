"""One burst against the bot, the same burst against the bare app, and the figures of both."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.databases import SQLITE, default_postgres_url, fresh_database, server_cpu_between
from bench.driver import Ack, Sampler, Sender, wait_until
from bench.processes import REPO_ROOT, Child, cpu_seconds, machine_busy_seconds
from bench.replicas import MB, create_replicas, start_replicas, stop_replicas
from bench.scenario import (
    WARM_UP,
    bot_environment,
    callers,
    clean_environment,
    policy_toml,
    warm_ups,
)
from bench.standins import InlineStandIns, ProcessStandIns, StandIns, create_slack, served_with
from bench.stats import summary
from bot.standins.slack import SlackStandIn
from bot.standins.tls import ca_file, make_certificates

LATE_ACK_SECONDS = 3.0  # Slack gives up (and retries) after 3 s
CONFIRMED = "Call placed"


@dataclass(frozen=True)
class Options:
    delay: float = 2.0
    standins: str = "process"  # or "inline"
    logs: Path = REPO_ROOT / "bench" / "results" / "logs"
    # After the last ack: how long the outcomes of N calls may take beyond the voice API's delay.
    settle_seconds: float = 60.0
    # Set: the bot runs under pyinstrument, which saves its profile here when the bot stops.
    profile_dir: Path | None = None
    # Seconds the Slack Web API stand-in takes to answer every call (0.25, 3: Slack on a bad day).
    slack_latency: float = 0.0
    # The bot's database (bench.databases: sqlite, postgresql), and how many bots share it.
    database: str = SQLITE
    postgres_url: str = field(default_factory=default_postgres_url)
    replicas: int = 1
    # True: the stand-ins serve HTTPS and wss:// (bot/standins/tls.py), which the bot and the
    # bare app trust through SSL_CERT_FILE, as Slack and Evo Voice are served.
    tls: bool = False
    # False: the bot's runs only, without the bare Bolt app's beside each (a run's "bare" and
    # "ratio_p99" are None): for a test about the bot's replicas, which the bare app tells nothing.
    bare: bool = True


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ack_figures(acks: Sequence[Ack]) -> dict[str, Any]:
    latencies = [a.latency for a in acks if a.ok and a.latency is not None]
    return {
        "sent": len(acks),
        "acked": len(latencies),
        **summary(latencies),
        "late": sum(1 for x in latencies if x > LATE_ACK_SECONDS) + (len(acks) - len(latencies)),
    }


def lag_figures(sampler: Sampler) -> dict[str, Any]:
    return {f"driver_lag_{k}": v for k, v in summary(sampler.lags).items()}


async def _start_standins(
    slack: SlackStandIn, options: Options, workdir: Path, tag: str, certificates: Path | None
) -> StandIns:
    standins: StandIns
    if options.standins == "process":
        standins = ProcessStandIns(options.delay, slack.ws_url, workdir=workdir,
                                   log_path=options.logs / f"{tag}-standins.log",
                                   latency=options.slack_latency, certificates=certificates)
    else:
        standins = InlineStandIns(slack, options.delay, options.slack_latency, certificates)
    await standins.start()
    return standins


def tag_of(mode: str, n: int, options: Options) -> str:
    """The run's name in log and profile file names."""
    tag = f"{mode}-{n}"
    if options.database != SQLITE or options.replicas != 1:
        tag += f"-{options.database}-x{options.replicas}"
    return tag


def _certificates(workdir: Path, options: Options) -> Path | None:
    """With --tls, the stand-ins' certificates (in `workdir`, removed with it)."""
    return make_certificates(workdir / "tls") if options.tls else None


async def _start_slack(certificates: Path | None) -> SlackStandIn:
    """The driver's Slack stand-in: Socket Mode envelopes and response_urls."""
    slack = create_slack()
    await slack.start(tls=served_with(certificates))
    return slack


def _trusting(env: dict[str, str], certificates: Path | None) -> dict[str, str]:
    """`env` with SSL_CERT_FILE naming the stand-ins' authority, with --tls."""
    return env if certificates is None else {**env, "SSL_CERT_FILE": ca_file(certificates)}


async def run_bot(mode: str, n: int, options: Options) -> dict[str, Any]:
    """Start `python -m bot` (`options.replicas` of them on one database), warm each up with one
    call, send N at once, wait for every outcome."""
    users = callers(n)
    warm = warm_ups(options.replicas)
    tag = tag_of(mode, n, options)
    workdir = Path(tempfile.mkdtemp(prefix="callbot-bench-"))
    (workdir / "callbot.toml").write_text(policy_toml(users))
    certificates = _certificates(workdir, options)
    slack = await _start_slack(certificates)
    slack.spread_envelopes = True  # over the replicas' connections, as Slack does
    standins = await _start_standins(slack, options, workdir, tag, certificates)
    lag = Sampler()  # the driver's event-loop lag

    async def outcomes_at_least(k: int) -> bool:
        return (await standins.counts())[1] >= k

    codes: list[int | None] = []
    try:
        async with fresh_database(options.database, workdir, options.postgres_url) as database:
            bots = create_replicas(
                options.replicas, workdir=workdir, logs=options.logs, tag=tag,
                profile_dir=options.profile_dir,
                environment=lambda port: _trusting(bot_environment(
                    mode, slack_api_url=standins.slack_api_url, evo_url=standins.evo_url,
                    workdir=workdir, port=port, database_url=database.url), certificates),
            )
            try:
                await start_replicas(bots)
                if mode == "socket":
                    await slack.wait_socket_connections(len(bots), timeout=30)
                sender = Sender(mode, slack, [b.events_url for b in bots])
                await sender.burst(warm)  # one call each
                if not await wait_until(lambda: outcomes_at_least(len(warm)),
                                        options.delay + options.settle_seconds):
                    raise bots[0].child.failed("never confirmed the warm-up calls")
                for bot in bots:
                    await bot.mark_idle()
                    bot.sampler.start()
                standins_cpu_before = standins.cpu_seconds()
                server_cpu_before = await database.server_cpu()
                driver_cpu_before = time.process_time()
                busy_before = machine_busy_seconds()
                lag.start()
                started = time.monotonic()
                acks = await sender.burst(users)
                acked = time.monotonic()
                await wait_until(lambda: outcomes_at_least(len(warm) + n),
                                 options.delay + options.settle_seconds)
                done = time.monotonic()
                # With calls being followed (issue 4), they are still followed here: the bots'
                # figures now are their figures with N calls followed.
                for bot in bots:
                    await bot.measure()
                standins_cpu = standins.cpu_seconds() - standins_cpu_before
                server_cpu = server_cpu_between(server_cpu_before, await database.server_cpu())
                driver_cpu = time.process_time() - driver_cpu_before
                busy = machine_busy_seconds() - busy_before
                results = await standins.results()
            finally:
                await lag.stop()
                codes = await stop_replicas(bots)
    finally:
        await standins.stop()
        await slack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    cpu = sum(b.figures["cpu_s"] for b in bots)
    sent_at = {a.caller.number: a.sent for a in acks}
    burst_posts = [p for p in results.posts if p.number in sent_at]
    # The bots' CPU from the burst's start until its last POST left: the work each call costs
    # before its phone can ring, which the target is about.
    last_post = max((p.time for p in burst_posts), default=None)
    dial_cpus = [None if last_post is None else b.cpu_until(last_post) for b in bots]
    dial_cpu = dial_loop_cpu = None
    if all(c is not None for c in dial_cpus):
        dial_cpu = sum(c[0] for c in dial_cpus if c is not None)
        # The part of it on the event loops: one thread each, so with one bot the burst's p99
        # can't be shorter than this (the rest, mostly the database thread, may run beside it).
        dial_loop_cpu = sum(c[1] for c in dial_cpus if c is not None)
    outcomes = [r.text for r in results.replies if r.time >= started]
    per_replica = [{**b.figures, "exit_code": code} for b, code in zip(bots, codes, strict=True)]
    return {
        "target": "bot",
        "startup_s": max(r["startup_s"] for r in per_replica),
        "ack": ack_figures(acks),
        "dial": summary([p.time - sent_at[p.number] for p in burst_posts]),
        "posts": len(burst_posts),
        "posts_distinct": len({p.number for p in burst_posts}),
        "outcomes": len(outcomes),
        "confirmations": sum(1 for text in outcomes if CONFIRMED in text),
        "burst_s": round(acked - started, 3),
        "all_outcomes_s": round(done - started, 3),
        "cpu_s": round(cpu, 2),
        # The bots' CPU per call of the burst: steadier than wall time on a shared machine.
        "cpu_ms_per_call": round(cpu * 1000 / n, 2),
        "dial_cpu_ms_per_call": None if dial_cpu is None else round(dial_cpu * 1000 / n, 2),
        "dial_loop_cpu_ms_per_call":
            None if dial_loop_cpu is None else round(dial_loop_cpu * 1000 / n, 2),
        # Whose CPU the burst used besides the bots': the stand-ins' (0 when inline) and the
        # bench process's own (driver, and stand-ins when inline). Two cores in all.
        "standins_cpu_s": round(standins_cpu, 2),
        "driver_cpu_s": round(driver_cpu, 2),
        # PostgreSQL's processes serving the bots' connections (0 for SQLite, which runs in the
        # bots): with the bots' CPU, what the burst cost in all.
        "database_cpu_s": round(server_cpu, 2),
        # Everything else the machine ran meanwhile: non-zero means the figures were disturbed.
        "others_cpu_s": round(max(0.0, busy - cpu - standins_cpu - driver_cpu - server_cpu), 2),
        # One replica: its figures. Several: the largest of each (per_replica has them all).
        **{key: max(r[key] for r in per_replica)
           for key in ("rss_idle_mb", "rss_in_flight_max_mb", "rss_end_mb", "rss_peak_mb")},
        "exit_code": next((c for c in codes if c != 0), 0),
        "per_replica": per_replica,
        **lag_figures(lag),
    }


async def run_bare(mode: str, n: int, options: Options) -> dict[str, Any]:
    """The same burst against `python -m bench.bare` (acks, then awaits `delay`)."""
    users = callers(n)
    tag = f"{mode}-{n}"
    workdir = Path(tempfile.mkdtemp(prefix="callbot-bench-"))
    certificates = _certificates(workdir, options)
    slack = await _start_slack(certificates)
    bare = Child("bench.bare", _trusting(clean_environment(), certificates), cwd=workdir,
                 log_path=options.logs / f"{tag}-bare.log",
                 args=[mode, slack.api_url, str(options.delay)], read_stdout=True)
    sampler = Sampler(bare)
    try:
        await bare.start()
        port = int((await bare.read_line()).removeprefix("ready "))
        startup = time.monotonic() - bare.started_at
        if mode == "socket":
            await slack.wait_connected()
        sender = Sender(mode, slack, [f"http://127.0.0.1:{port}/slack/events"])
        await sender.burst([WARM_UP])
        idle = bare.memory()
        cpu_before = cpu_seconds(bare.pid)
        sampler.start()
        started = time.monotonic()
        acks = await sender.burst(users)
        acked = time.monotonic()
        await asyncio.sleep(options.delay)  # the listeners' awaits end
        end = bare.memory()
        cpu = cpu_seconds(bare.pid) - cpu_before
    finally:
        await sampler.stop()
        code = await bare.stop()
        await slack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "target": "bare",
        "startup_s": round(startup, 3),
        "ack": ack_figures(acks),
        "burst_s": round(acked - started, 3),
        "cpu_s": round(cpu, 2),
        "rss_idle_mb": round(idle.rss / MB, 1),
        "rss_peak_mb": round(end.hwm / MB, 1),
        "exit_code": code,
        **lag_figures(sampler),
    }


def ratio(bot: dict[str, Any], bare: dict[str, Any]) -> float | None:
    a, b = bot["ack"]["p99_ms"], bare["ack"]["p99_ms"]
    if a is None or not b:
        return None
    return round(a / b, 2)


async def run_pair(mode: str, n: int, options: Options) -> dict[str, Any]:
    load = os.getloadavg()[0]
    slow = f", Slack {options.slack_latency * 1000:g} ms" if options.slack_latency else ""
    setup = f", {options.database} × {options.replicas}"
    _log(f"bench: {mode} N={n}{setup}{slow}: bot …")
    bot = await run_bot(mode, n, options)
    bare = None
    if options.bare:
        _log(f"bench: {mode} N={n}: bare Bolt app …")
        bare = await run_bare(mode, n, options)
    return {"mode": mode, "n": n, "slack_latency_s": options.slack_latency,
            "database": options.database, "replicas": options.replicas,
            "load_before": round(load, 2), "bot": bot, "bare": bare,
            "ratio_p99": None if bare is None else ratio(bot, bare)}


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def git_commit() -> str | None:
    """The commit measured, `+changes` when tracked files differ from it."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
            check=True,
        )
        clean = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO_ROOT).returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return None
    commit = out.stdout.strip()
    return (commit if clean else f"{commit}+changes") or None


async def run_benchmark(
    modes: Sequence[str], ns: Sequence[int], options: Options, *, repeat: int = 1,
    slack_latencies: Sequence[float] = (), slack_latency_ns: Sequence[int] | None = None,
    databases: Sequence[str] = (SQLITE,), replicas: Sequence[int] = (1,),
) -> dict[str, Any]:
    """Every (mode, N, database, replicas) `repeat` times; then, for each of `slack_latencies`,
    every (mode, N in `slack_latency_ns`, else `ns`) once more with the Slack stand-in answering
    that late, on the first database and replica count: the rows about dialling while Slack is
    slow."""
    setups = [replace(options, database=d, replicas=r) for d in databases for r in replicas]
    runs = [
        await run_pair(mode, n, setup)
        for mode in modes for n in ns for setup in setups for _ in range(repeat)
    ]
    for latency in slack_latencies:
        slow = replace(setups[0], slack_latency=latency)
        runs += [await run_pair(mode, n, slow) for mode in modes for n in slack_latency_ns or ns]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "options": {"delay_s": options.delay, "standins": options.standins, "tls": options.tls,
                    "modes": list(modes), "n": list(ns), "repeat": repeat,
                    "slack_latencies_s": list(slack_latencies), "databases": list(databases),
                    "replicas": list(replicas)},
        "runs": runs,
    }
