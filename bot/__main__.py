"""`python -m bot` / `callbot`: run the bot (default), check the set-up, print the Slack manifest.

    callbot [run]       read the configuration, check it, serve Slack until SIGTERM
    callbot check       the doctor: every setting tried against Slack, Evo Voice and the database,
                        one ✓/✗ line each; exit code 0 only when all pass
    callbot manifest [--http https://HOST]
                        the Slack app manifest for Socket Mode, or for HTTP mode at HOST
    callbot init        a wizard: asks, checks each answer live, writes .env and callbot.toml
    callbot demo [--port N]
                        the real bot against built-in stand-ins for Slack and Evo Voice, with a
                        local web page playing Slack's part: no credentials, no network
    callbot backup PATH a consistent copy of the SQLite database at DATABASE_URL, taken while
                        the bot runs
    callbot migrate-db POSTGRES_URL
                        copy the (stopped) SQLite installation at DATABASE_URL to PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import ConfigError

# Each action imports what it needs when it runs: the bot itself (Slack, Evo Voice, the database)
# costs some 0.7 s of CPU to import, which `--help`, `manifest` or a configuration error need not
# pay.

EXIT_CONFIG = 2
# The garbage collector's thresholds while the bot runs (see _run).
GC_THRESHOLDS = (20_000, 20, 20)


def build_parser() -> argparse.ArgumentParser:
    """`callbot`'s command line: its commands and their options (README names each one)."""
    parser = argparse.ArgumentParser(
        prog="callbot", description="Slack bot that places phone calls through Evo Voice."
    )
    actions = parser.add_subparsers(
        dest="action", metavar="{run,check,manifest,demo,init,backup,migrate-db}"
    )
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
    demo = actions.add_parser(
        "demo", help="try callbot in a browser: the real bot against a simulated Slack and Evo "
        "Voice, no credentials needed",
    )
    demo.add_argument(
        "--port", type=int, default=None,
        help="port of the demo page on 127.0.0.1 (default: PORT, else 3000; 0: any free port)",
    )
    actions.add_parser(
        "init", help="set up: answer a few questions, each checked live; writes .env and "
        "callbot.toml",
    )
    copy = actions.add_parser(
        "backup", help="copy the SQLite database to PATH while the bot runs (online backup)"
    )
    copy.add_argument("path", metavar="PATH", help="the new file to write")
    move = actions.add_parser(
        "migrate-db", help="copy the SQLite database at DATABASE_URL into an empty PostgreSQL one"
    )
    move.add_argument("target", metavar="POSTGRES_URL", help="postgresql://USER:PASSWORD@HOST/DB")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.action == "init":
        from bot.ops.init import main as init

        return init()
    if args.action == "demo":
        return _demo(parser, args.port)
    if args.action == "backup":
        return _backup(args.path)
    if args.action == "migrate-db":
        return _migrate_db(args.target)
    if args.action == "check":
        return _check()
    if args.action == "manifest":
        return _manifest(parser, args.http)
    return _run()


def _run() -> int:
    # What the imports and the configuration build is never garbage: collections while they load
    # would walk ever more of it for nothing (a twentieth of the CPU of importing the bot).
    collecting = gc.isenabled()  # a caller's choice (tests call this in their own process)
    gc.disable()
    try:
        from bot.config import ConfigError, load_configuration

        try:
            settings, policy = load_configuration()
        except ConfigError as exc:
            _report(exc)
            return EXIT_CONFIG

        from bot.ops import event_loop
        from bot.ops.logs import configure_logging
        from bot.runtime import Runtime, run_until_signalled
        from bot.storage.database import SchemaRefused

        configure_logging(settings.log_level, settings.log_format)
        # It lives as long as the process: out of the garbage collector's sight, a full
        # collection during a burst walks only what the burst made (a fifth of the bot's CPU up
        # to its last POST went to collections when 1,000 calls came at once; the full ones took
        # 0.37 s, 0.13 s frozen).
        gc.freeze()
    finally:
        if collecting:
            gc.enable()
    thresholds = gc.get_threshold()  # a caller's too
    # Young collections after 20,000 new objects rather than 700, older ones after 20 of the one
    # below rather than 10. A burst makes about a thousand objects for each call before its POST:
    # at 700, a quarter of the event loop's CPU up to the last POST of 1,000 calls went to 270
    # collections (250 ms); at 20,000, nine took 80 ms. They free only what reference counting
    # leaves (cycles), so memory stays where it was (benchmark: peak RSS 100 MB either way).
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        event_loop.run(run_until_signalled(Runtime(settings, policy)), settings.event_loop)
    except ConfigError as exc:
        _report(exc, settings.log_format)
        return EXIT_CONFIG
    except SchemaRefused as exc:
        # Never run on a schema this code doesn't know: it could write what a newer one forbids.
        # Nor start with a role that may not migrate it (MigrationNotAllowed).
        _say(f"callbot cannot start: {exc}", settings.log_format)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return 0


def _backup(path: str) -> int:
    from pathlib import Path

    from bot.config import database_url
    from bot.ops.backup import BackupRefused, backup
    from bot.storage.database import DatabaseUrlError

    try:
        pages = backup(database_url(), Path(path))
    except (BackupRefused, DatabaseUrlError) as exc:
        print(f"callbot backup: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"callbot backup: {path} written ({pages} pages), a consistent copy")
    return 0


def _migrate_db(target: str) -> int:
    from bot.config import audit_spool_path, database_url, lease_seconds
    from bot.ops.logs import one_line
    from bot.ops.migrate_db import MigrationRefused, migrate_db
    from bot.storage.database import DatabaseUrlError

    try:
        source = database_url()
        copied = asyncio.run(migrate_db(source, target, audit_spool_path(source),
                                        lease_seconds=lease_seconds()))
    except (MigrationRefused, DatabaseUrlError) as exc:
        print(f"callbot migrate-db: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # PostgreSQL unreachable or refusing, a row it won't take: one line
        from bot.ops.check_database import without_password

        from bot.masking import mask_numbers_in

        # A row the server refused is quoted in its words ("Failing row contains (…)").
        reason = mask_numbers_in(without_password(f"{type(exc).__name__}: {exc}"))
        print(f"callbot migrate-db: the copy failed ({one_line(reason)}); nothing was copied: "
              "fix that and run it again", file=sys.stderr)
        return 1
    if copied.spooled:
        print(f"callbot migrate-db: wrote {copied.spooled} audit record(s) waiting in the spool "
              "into the SQLite database first")
    if copied.left_in_spool:
        print(f"callbot migrate-db: {copied.left_in_spool} audit record(s) the SQLite database "
              "refused stay in the spool (the errors above say why)", file=sys.stderr)
    rows = ", ".join(f"{table} {n}" for table, n in copied.rows.items() if n) or "no rows"
    print(f"callbot migrate-db: copied {rows}; now set DATABASE_URL to the PostgreSQL URL")
    return 0


def _check() -> int:
    from bot.ops import check as doctor
    from bot.ops.logs import configure_logging

    # The checks say what went wrong; library warnings would only repeat it.
    configure_logging("ERROR")
    return asyncio.run(doctor.main())


def _demo(parser: argparse.ArgumentParser, port: int | None) -> int:
    from bot.config import DEFAULT_PORT
    from bot.demo.web import serve
    from bot.ops.logs import configure_logging

    if port is None:
        raw = os.environ.get("PORT") or str(DEFAULT_PORT)
        try:
            port = int(raw)
        except ValueError:
            parser.exit(EXIT_CONFIG, f"callbot demo: PORT={raw!r} is not a port number\n")
    if not 0 <= port <= 65535:
        parser.exit(EXIT_CONFIG, f"callbot demo: {port} is not a port number\n")
    configure_logging("WARNING")
    try:
        asyncio.run(serve(port))
    except OSError as exc:
        parser.exit(EXIT_CONFIG, f"callbot demo: cannot listen on port {port} ({exc.strerror}); "
                    "choose another with --port\n")
    except KeyboardInterrupt:
        pass
    return 0


def _manifest(parser: argparse.ArgumentParser, http: str | None) -> int:
    from bot.slack.manifest import ManifestError, render

    try:
        text = render(http)
    except ManifestError as exc:
        parser.exit(EXIT_CONFIG, f"callbot manifest: {exc}\n")
    sys.stdout.write(text)
    return 0


def _report(exc: ConfigError, log_format: str = "text") -> None:
    if log_format == "json":
        for problem in exc.problems:
            _say(f"callbot cannot start; fix the configuration: {problem}", log_format)
        return
    print("callbot cannot start; fix the configuration:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  ✗ {problem}", file=sys.stderr)


def _say(line: str, log_format: str) -> None:
    """Why the bot stops. With LOG_FORMAT=json (logging set up by then) a record: a collector
    reading JSON lines would drop a plain one, and with it the only words saying what to fix."""
    if log_format == "json":
        import logging

        logging.getLogger("bot").critical(line)
    else:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    code = main()
    # Ending, the interpreter collects garbage among everything it holds (unfrozen by `_run`, which
    # tests also call), all of it about to be freed anyway: a twentieth of a bot's CPU from start
    # to stop. Frozen, it is left alone.
    gc.freeze()
    sys.exit(code)
