"""`python -m bench`: run the bursts, print the table, write the JSON (and the results block of
docs/benchmark.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.databases import (
    DATABASES,
    LOCAL_POSTGRES_URL,
    POSTGRES_URL_VARIABLE,
    SQLITE,
    default_postgres_url,
)
from bench.processes import REPO_ROOT, ProcessFailed
from bench.report import RESULTS_DOC, markdown, update_results_block
from bench.runner import Options, run_benchmark
from bench.scenario import MAX_REPLICAS

DEFAULT_OUTPUT = REPO_ROOT / "bench" / "results" / "latest.json"


def _words(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _sizes(text: str) -> list[int]:
    return [int(part) for part in _words(text)]


def _seconds_list(text: str) -> list[float]:
    return [float(part) / 1000 for part in _words(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Bursts of /call against the real bot and a bare slack-bolt app, on loopback "
        "stand-ins: ack latency, dialling overhead, POSTs, confirmations, memory, start-up.",
    )
    parser.add_argument("--modes", default="socket,http", type=_words,
                        help="comma-separated: socket, http (default: both)")
    parser.add_argument("--n", default="100,1000", type=_sizes,
                        help="burst sizes, comma-separated (default: 100,1000)")
    parser.add_argument("--delay", type=float, default=2.0,
                        help="seconds the Evo Voice stand-in takes to answer each POST (default 2)")
    parser.add_argument("--slack-latency", default="", type=_seconds_list, metavar="MS,MS",
                        help="after the main runs, run every (mode, N) once more with Slack's Web "
                        "API answering after each of these milliseconds (e.g. 0,250,3000)")
    parser.add_argument("--slack-latency-n", default="", type=_sizes, metavar="N,N",
                        help="burst sizes for the --slack-latency runs (default: --n's)")
    parser.add_argument("--database", dest="databases", default=SQLITE, type=_words,
                        help="comma-separated: sqlite, postgresql (default: sqlite); every "
                        "(mode, N) runs on each, in a fresh database dropped afterwards")
    parser.add_argument("--replicas", default="1", type=_sizes, metavar="K,K",
                        help="bot processes sharing the database, comma-separated (default: 1); "
                        "every (mode, N, database) runs with each count")
    parser.add_argument("--postgres-url", default=default_postgres_url(), metavar="URL",
                        help=f"the PostgreSQL server for --database postgresql; each run makes "
                        f"a schema of its own there (default: ${POSTGRES_URL_VARIABLE}, else "
                        f"{LOCAL_POSTGRES_URL})")
    parser.add_argument("--quick", action="store_true", help="N=100 only: a smoke test")
    parser.add_argument("--repeat", type=int, default=1, help="run every (mode, N) this many times")
    parser.add_argument("--standins", choices=["process", "inline"], default="process",
                        help="where the Slack Web API and Evo Voice stand-ins run (default: a "
                        "process of their own; inline: on the driver's event loop)")
    parser.add_argument("--tls", action="store_true",
                        help="the stand-ins serve HTTPS and wss:// (a certificate of their own "
                        "authority, which the bot and the bare app are told to trust), as Slack "
                        "and Evo Voice do")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"JSON results (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    # The flag kept its name when the results moved from README.md to docs/benchmark.md.
    parser.add_argument("--update-readme", "--update-docs", dest="update_docs", action="store_true",
                        help="rewrite the results block in docs/benchmark.md")
    parser.add_argument("--from", dest="saved", type=Path, metavar="JSON",
                        help="report a saved run (its JSON) instead of running")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the bot under pyinstrument (pip install -e '.[profile]'); one "
                        "session per burst in DIR, shown by `pyinstrument --load FILE`")
    args = parser.parse_args(argv)
    modes = args.modes
    if unknown := [m for m in modes if m not in ("socket", "http")]:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    if unknown := [d for d in args.databases if d not in DATABASES]:
        parser.error(f"unknown databases: {', '.join(unknown)}")
    if wrong := [r for r in args.replicas if not 1 <= r <= MAX_REPLICAS]:
        parser.error(f"replicas must be between 1 and {MAX_REPLICAS}: {wrong}")
    ns = [100] if args.quick else args.n

    if args.saved is not None:
        results = json.loads(args.saved.read_text(encoding="utf-8"))
    else:
        options = Options(delay=args.delay, standins=args.standins,
                          logs=args.output.parent / "logs", profile_dir=args.profile,
                          postgres_url=args.postgres_url, tls=args.tls)
        try:
            results = asyncio.run(run_benchmark(modes, ns, options, repeat=args.repeat,
                                                slack_latencies=args.slack_latency,
                                                slack_latency_ns=args.slack_latency_n or None,
                                                databases=args.databases,
                                                replicas=args.replicas))
        except ProcessFailed as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 1
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"JSON: {args.output}", file=sys.stderr)
    print(markdown(results))
    if args.update_docs:
        update_results_block(RESULTS_DOC, results)
        print(f"{RESULTS_DOC.relative_to(REPO_ROOT)}: benchmark block rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
