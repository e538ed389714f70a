"""`callbot backup PATH`: a consistent copy of the SQLite database, taken while bots run.

SQLite's online backup API copies the database page by page under a read transaction, so the copy
is one consistent state of the database, WAL included, even while bots write to it; the bots are
never stopped. The copy is always a new file, readable by its owner only: an existing file or a
symbolic link at PATH is refused, never replaced nor written through. For PostgreSQL, `pg_dump` is
the tool (README: Databases).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import BinaryIO

from bot.storage.database import POSTGRESQL, DatabaseUrlError, dialect_of, sqlite_path
from bot.storage.sqlite import OWNER_ONLY, create_owner_only


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
    if not target.parent.is_dir():
        raise BackupRefused(f"{target.parent} is not a directory: name a file in one")
    out = _create_new(target)
    ours = os.fstat(out)
    try:
        with os.fdopen(out, "wb") as file:
            pages = _copy(source_path, target.parent, file)
    except BaseException as exc:
        # A full disk, a file that is no database, a folder it may not write in: no half-written
        # copy is left to refuse the next try with "exists already". Only the file this made:
        # whatever has since taken its name is someone else's.
        with contextlib.suppress(OSError):
            if os.path.samestat(os.lstat(target), ours):
                target.unlink()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise BackupRefused(f"the copy failed ({exc}); nothing was kept") from None
        raise
    return pages


def _create_new(target: Path) -> int:
    """Open `target` as a new file only its owner may read (it holds what the database holds,
    bot/storage/sqlite.py): never an existing file, never through a symbolic link (whoever may write
    in that folder could have left one, to a file of the operator's or to a place they can read)."""
    try:
        return os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, OWNER_ONLY)
    except OSError as exc:
        if target.is_symlink():  # (EEXIST on Linux, ELOOP elsewhere)
            problem = f"{target} is a symbolic link: name a new file, not a link"
        elif isinstance(exc, FileExistsError):
            problem = f"{target} exists already: name a new file"
        else:
            problem = f"cannot create {target} ({exc.strerror or exc}): name a file you may create"
        raise BackupRefused(problem) from None


def _copy(source_path: Path, folder: Path, out: BinaryIO) -> int:
    """Copy the database into `out` through a file in a folder of the bot's own next to it: SQLite
    opens a database by its name, which in the operator's folder could be swapped for a link
    between that open and ours."""
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True)
    pages = 0

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total

    try:
        with tempfile.TemporaryDirectory(prefix=".callbot-backup-", dir=folder) as private:
            staged = Path(private) / "copy.db"
            create_owner_only(staged)
            copy = sqlite3.connect(staged)
            try:
                source.backup(copy, progress=progress)
                ok = copy.execute("PRAGMA integrity_check").fetchone()
                # The copy says WAL, as its source does: rollback mode puts all of it in the one
                # file (the bot turns WAL on again when it opens a restored copy).
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
            if ok is None or ok[0] != "ok":
                raise BackupRefused(
                    f"the copy failed its integrity check ({ok}); nothing was kept")
            with staged.open("rb") as copied:
                shutil.copyfileobj(copied, out)
            out.flush()
            os.fsync(out.fileno())
    finally:
        source.close()
    return pages
