"""`python -m bot` / `callbot`: run the bot (default), check the set-up, print the Slack manifest.

    callbot [run]       read the configuration, check it, serve Slack until SIGTERM
    callbot check       the doctor: every setting tried against Slack, Evo Voice and the database,
                        one ✓/✗ line each; exit code 0 only when all pass
    callbot manifest [--http https://HOST]
                        the Slack app manifest for Socket Mode, or for HTTP mode at HOST
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import ConfigError, load_configuration
from bot.ops.logs import configure_logging
from bot.runtime import Runtime, run_until_signalled

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="callbot", description="Slack bot that places phone calls through Evo Voice."
    )
    actions = parser.add_subparsers(dest="action", metavar="{run,check,manifest}")
    actions.add_parser("run", help="run the bot (the default)")
    actions.add_parser(
        "check", help="check the configuration against Slack, Evo Voice and the database"
    )
    manifest = actions.add_parser(
        "manifest", help="print the Slack app manifest (Socket Mode, or HTTP mode with --http)"
    )
    manifest.add_argument(
        "--http", metavar="https://HOST",
        help="the bot's public address: print the manifest for HTTP mode, with Slack's request "
        "URLs pointing at https://HOST/slack/events",
    )
    args = parser.parse_args(argv)
    if args.action == "check":
        return _check()
    if args.action == "manifest":
        return _manifest(parser, args.http)
    return _run()


def _run() -> int:
    try:
        settings, policy = load_configuration()
    except ConfigError as exc:
        _report(exc)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(run_until_signalled(Runtime(settings, policy)))
    except ConfigError as exc:
        _report(exc)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    return 0


def _check() -> int:
    from bot.ops import check as doctor

    # The checks say what went wrong; library warnings would only repeat it.
    configure_logging("ERROR")
    return asyncio.run(doctor.main())


def _manifest(parser: argparse.ArgumentParser, http: str | None) -> int:
    from bot.slack.manifest import ManifestError, render

    try:
        text = render(http)
    except ManifestError as exc:
        parser.exit(EXIT_CONFIG, f"callbot manifest: {exc}\n")
    sys.stdout.write(text)
    return 0


def _report(exc: ConfigError) -> None:
    print("callbot cannot start; fix the configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  ✗ {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
