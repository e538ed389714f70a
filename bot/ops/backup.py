"""`callbot backup PATH`: a consistent copy of the SQLite database, taken while bots run.

SQLite's online backup API copies the database page by page under a read transaction, so the copy
is one consistent state of the database, WAL included, even while bots write to it; the bots are
never stopped. For PostgreSQL, `pg_dump` is the tool (README: Databases).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.storage.database import POSTGRESQL, DatabaseUrlError, dialect_of, sqlite_path
from bot.storage.sqlite import create_owner_only


class BackupRefused(Exception):
    """Nothing was written: the reason, in words for the operator."""


def backup(database_url: str, target: Path) -> int:
    """Copy the database at `database_url` to `target` (a new file); the pages copied."""
    try:
        if dialect_of(database_url) == POSTGRESQL:
            raise BackupRefused(
                "DATABASE_URL names PostgreSQL: back it up with pg_dump (README: Databases)"
            )
        source_path = Path(sqlite_path(database_url))
    except DatabaseUrlError as exc:
        raise BackupRefused(f"DATABASE_URL: {exc}") from None
    if not source_path.exists():
        raise BackupRefused(f"{source_path} does not exist: check DATABASE_URL")
    if target.exists():
        raise BackupRefused(f"{target} exists already: name a new file")
    if not target.parent.is_dir():
        raise BackupRefused(f"{target.parent} is not a directory: name a file in one")
    try:
        return _copy(source_path, target)
    except (sqlite3.Error, OSError) as exc:
        # A full disk, a file that is no database, a folder it may not write in: no half-written
        # copy is left to refuse the next try with "exists already".
        target.unlink(missing_ok=True)
        raise BackupRefused(f"the copy failed ({exc}); nothing was kept") from None


def _copy(source_path: Path, target: Path) -> int:
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
    pages = 0

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total

    try:
        create_owner_only(target)  # it holds what the database holds (bot/storage/sqlite.py)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, progress=progress)
            ok = copy.execute("PRAGMA integrity_check").fetchone()
        finally:
            copy.close()
    finally:
        source.close()
    if ok is None or ok[0] != "ok":
        target.unlink(missing_ok=True)
        raise BackupRefused(f"the copy failed its integrity check ({ok}); nothing was kept")
    return pages
