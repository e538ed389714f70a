"""Opening the bot's database at start-up: what stops it is one line naming DATABASE_URL, in the
operator's words (a folder, a read-only file, a full disk, no database, a server refusing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.config import ConfigError
from bot.storage.database import SQLITE, Database, DatabaseRefused, sqlite_path
from bot.storage.faults import DATABASE_FAULTS


_OPEN_FAILURES: tuple[type[Exception], ...] = (
    sqlite3.Error, OSError, DatabaseRefused, *DATABASE_FAULTS)


async def open_database(db: Database) -> None:
    """Open and migrate the database; what stops it is a ConfigError naming DATABASE_URL."""
    try:
        await db.open()
    except _OPEN_FAILURES as exc:
        raise ConfigError([f"DATABASE_URL: {describe_database_failure(db, exc)}"]) from None


def describe_database_failure(db: Database, exc: BaseException) -> str:
    if db.dialect != SQLITE:
        # Never the URL: it may hold the password; a refusal's words (no such database) don't.
        said = f": {exc}" if isinstance(exc, DatabaseRefused) else f" ({type(exc).__name__})"
        return (f"cannot open the PostgreSQL database{said}; check that the server is running "
                "and the URL, user and database are right")
    where = sqlite_path(db.url)
    text = str(exc).lower()
    if isinstance(exc, IsADirectoryError) or Path(where).is_dir():
        return f"{where} is a folder; name a file inside it, like sqlite:///{where}/callbot.db"
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return (
            f"{where} is read-only (the file, its folder or the disk); callbot must write there: "
            "fix the permissions or mount it writable"
        )
    if "full" in text:
        return f"the disk holding {where} is full; free some space and start again"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (
            f"{where} is not a usable SQLite database ({exc}); restore it from a backup, or "
            "move it aside to start with an empty one"
        )
    return f"cannot open {where} ({exc}); check the path, its permissions and the disk"
