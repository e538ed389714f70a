"""The results as a Markdown table, the issue's targets checked against them, the README block."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README_BEGIN = "<!-- bench:begin (python -m bench --update-readme rewrites this block) -->"
README_END = "<!-- bench:end -->"

# The targets, for N = 1,000 (2-core machine, both modes).
TARGET_N = 1000
MAX_RATIO_P99 = 2.0
MAX_DIAL_P99_MS = 250.0
MAX_PEAK_RSS_MB = 150.0
MAX_STARTUP_S = 2.0


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def table(results: dict[str, Any]) -> str:
    rows = [
        "| mode | N | ack p50 / p99 / max (ms) | acks > 3 s | bare Bolt ack p99 (ms) "
        "| bot / bare p99 | dialling p50 / p99 (ms) | POSTs | confirmed | RSS idle / peak (MB) "
        "| start-up (s) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in results["runs"]:
        bot, bare = run["bot"], run["bare"]
        ack, dial = bot["ack"], bot["dial"]
        ratio = run["ratio_p99"]
        rows.append(
            f"| {run['mode']} | {run['n']:,} "
            f"| {_ms(ack['p50_ms'])} / {_ms(ack['p99_ms'])} / {_ms(ack['max_ms'])} "
            f"| {ack['late']} | {_ms(bare['ack']['p99_ms'])} "
            f"| {'–' if ratio is None else f'{ratio:.2f}'} "
            f"| {_ms(dial['p50_ms'])} / {_ms(dial['p99_ms'])} "
            f"| {bot['posts']:,} | {bot['confirmations']:,} "
            f"| {bot['rss_idle_mb']:.0f} / {bot['rss_peak_mb']:.0f} | {bot['startup_s']:.2f} |"
        )
    return "\n".join(rows)


def targets(results: dict[str, Any]) -> list[tuple[bool, str]]:
    """(met, description) for every target, on the N = 1,000 runs; empty without such runs."""
    checks: list[tuple[bool, str]] = []
    for run in results["runs"]:
        if run["n"] != TARGET_N:
            continue
        bot, mode = run["bot"], run["mode"]
        ratio, dial_p99 = run["ratio_p99"], bot["dial"]["p99_ms"]
        checks += [
            (bot["ack"]["late"] == 0,
             f"{mode}: acks later than 3 s: {bot['ack']['late']} (target 0)"),
            (ratio is not None and ratio <= MAX_RATIO_P99,
             f"{mode}: p99 ack {ratio} × the bare Bolt app's (target ≤ {MAX_RATIO_P99:g})"),
            (bot["posts"] == TARGET_N and bot["posts_distinct"] == TARGET_N,
             f"{mode}: POSTs {bot['posts']:,}, distinct numbers {bot['posts_distinct']:,} "
             f"(target exactly {TARGET_N:,})"),
            (dial_p99 is not None and dial_p99 <= MAX_DIAL_P99_MS,
             f"{mode}: dialling overhead p99 {_ms(dial_p99)} ms (target ≤ {MAX_DIAL_P99_MS:.0f})"),
            (bot["rss_peak_mb"] <= MAX_PEAK_RSS_MB,
             f"{mode}: peak RSS {bot['rss_peak_mb']:.0f} MB (target ≤ {MAX_PEAK_RSS_MB:.0f})"),
            (bot["startup_s"] <= MAX_STARTUP_S,
             f"{mode}: start-up to ready {bot['startup_s']:.2f} s (target ≤ {MAX_STARTUP_S:g})"),
        ]
    return checks


def describe_run(results: dict[str, Any]) -> str:
    m, o = results["machine"], results["options"]
    where = "in a process of their own" if o["standins"] == "process" else "in the bench process"
    commit = f", commit `{results['commit']}`" if results.get("commit") else ""
    return (
        f"Measured {results['date'][:10]} on {m['cpus']} × {m['cpu_model']}, Python {m['python']}, "
        f"{m['system']}{commit}. Evo Voice stand-in answers every POST after {o['delay_s']:g} s; "
        f"stand-ins {where}."
    )


def markdown(results: dict[str, Any]) -> str:
    lines = [describe_run(results), "", table(results)]
    checks = targets(results)
    if checks:
        lines += ["", f"Targets (N = {TARGET_N:,}):", ""]
        lines += [f"- {'✅' if met else '❌'} {text}" for met, text in checks]
    return "\n".join(lines)


def update_readme(path: Path, results: dict[str, Any]) -> None:
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no benchmark block ({README_BEGIN} … {README_END})")
    block = f"{README_BEGIN}\n{markdown(results)}\n{README_END}"
    path.write_text(pattern.sub(lambda _: block, text, count=1), encoding="utf-8")
