"""`python -m bot` / `callbot`: read the configuration, check it against Evo Voice, serve Slack."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import ConfigError, load_configuration
from bot.logs import configure_logging
from bot.runtime import Runtime, run_until_signalled

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="callbot", description="Slack bot that places phone calls through Evo Voice."
    )
    parser.add_argument("action", nargs="?", default="run", choices=["run"],
                        help="run the bot (default)")
    parser.parse_args(argv)
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


def _report(exc: ConfigError) -> None:
    print("callbot cannot start; fix the configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  ✗ {problem}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
