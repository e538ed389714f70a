"""The benchmark's machinery at a tiny N: every call is sent, acked, dialled once and confirmed.

Counts only: how long anything took is the benchmark's business, never a test's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import README_BEGIN, README_END, RESULTS_DOC, markdown, update_results_block
from bench.runner import Options, run_benchmark
from tests.processes import one_ca_certificate

N = 5
# Seconds the voice API stand-in takes to answer a POST, and the bare app's work after its ack:
# each run waits it out three times (the warm-up's calls, the burst's, the bare app's).
DELAY = 0.02


@pytest.fixture(autouse=True)
def one_ca_certificate_for_the_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench's processes (bots, bare apps, stand-ins) take this process's environment: see
    tests/processes.py `with_one_ca_certificate`."""
    monkeypatch.setenv("SSL_CERT_FILE", one_ca_certificate())


async def test_bench_counts_every_call_in_both_modes(tmp_path: Path) -> None:
    options = Options(delay=DELAY, logs=tmp_path / "logs")

    results = await run_benchmark(["socket", "http"], [N], options)

    assert [(run["mode"], run["n"]) for run in results["runs"]] == [("socket", N), ("http", N)]
    for run in results["runs"]:
        bot, bare = run["bot"], run["bare"]
        assert bot["ack"]["sent"] == bot["ack"]["acked"] == N
        assert bot["posts"] == bot["posts_distinct"] == N
        assert bot["outcomes"] == bot["confirmations"] == N
        assert bot["exit_code"] == 0
        assert bot["rss_peak_mb"] >= bot["rss_idle_mb"] > 0
        # The event loop's share of it, measured (in clock ticks: at N = 5 it may exceed the
        # process's by a tick or two of rounding).
        assert bot["dial_loop_cpu_ms_per_call"] >= 0
        assert bare["ack"]["sent"] == bare["ack"]["acked"] == N
        assert bare["exit_code"] == 0
    assert "| socket | sqlite | 1 | 5 | 0 |" in markdown(results)

    # `--update-readme` rewrites the block in docs/benchmark.md, and only the block.
    doc = tmp_path / "benchmark.md"
    doc.write_text(RESULTS_DOC.read_text(encoding="utf-8"), encoding="utf-8")
    update_results_block(doc, results)
    before, after = RESULTS_DOC.read_text(encoding="utf-8"), doc.read_text(encoding="utf-8")
    assert "| socket | sqlite | 1 | 5 | 0 |" in after
    assert after.split(README_BEGIN)[0] == before.split(README_BEGIN)[0]
    assert after.split(README_END)[1] == before.split(README_END)[1]


async def test_bench_runs_over_tls(tmp_path: Path) -> None:
    # --tls: the stand-ins (a process of their own) and the driver's Socket Mode serve HTTPS and
    # wss:// only, so every call counted went over TLS, the bare app's acks too.
    options = Options(delay=DELAY, logs=tmp_path / "logs", tls=True)

    results = await run_benchmark(["socket"], [N], options)

    [run] = results["runs"]
    assert run["bot"]["posts"] == run["bot"]["confirmations"] == N
    assert run["bare"]["ack"]["acked"] == N
    assert "they serve HTTPS and wss:// (--tls)" in markdown(results)
    log = (tmp_path / "logs" / f"socket-{N}-bot.log").read_text()
    assert "callbot ready (Socket Mode" in log


async def test_bench_runs_the_slack_latency_rows(tmp_path: Path) -> None:
    # The stand-ins in the bench process (`--standins inline`): a process of their own is the test
    # above's, and each one costs a Python start.
    options = Options(delay=DELAY, standins="inline", logs=tmp_path / "logs")

    results = await run_benchmark(["http"], [N], options, slack_latencies=[0.05])

    assert results["options"]["standins"] == "inline"
    assert [(r["n"], r["slack_latency_s"]) for r in results["runs"]] == [(N, 0.0), (N, 0.05)]
    for run in results["runs"]:
        bot = run["bot"]
        assert bot["posts"] == bot["posts_distinct"] == bot["confirmations"] == N
        assert bot["cpu_ms_per_call"] >= 0
    assert "| http | sqlite | 1 | 5 | 50 |" in markdown(results)
