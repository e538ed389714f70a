"""What the database is to the code above it, whatever the backend: the URL that picks one, the
errors both raise alike, a row and a connection, and what each backend (bot/storage/sqlite.py,
bot/storage/postgres.py) provides to the `Database` in front of them (bot/storage/database.py)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

from bot.storage.migrations import Migration

T = TypeVar("T")

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# How long a SQLite write waits for another process's write lock, unless the URL says
# (`sqlite:///./callbot.db?busy_timeout=MS`).
SQLITE_BUSY_TIMEOUT_MS = 5000


class DatabaseUrlError(ValueError):
    pass


class IntegrityError(Exception):
    """A constraint refused the statement (a unique key taken, a trigger's refusal), on either
    backend."""


class DatabaseFault(Exception):
    """The PostgreSQL server failed for a while (gone, refusing, a full disk, read-only, a lock or
    statement timeout): the backend's translation of the driver's own errors, so that the code
    above it (bot/storage/faults.py) need not import the driver to recognise them. Each is a
    subclass named after the driver's error, which is its `__cause__`."""


class DatabaseRefused(Exception):
    """The PostgreSQL server answered and refused what DATABASE_URL names: no such database or
    role, a wrong password. Named after the driver's error; its words name no secret."""


class SchemaRefused(RuntimeError):
    """The database's schema is not one this callbot may run on, and it can't make it so: the
    words say what to do. Start-up stops with them."""


class SchemaTooNew(SchemaRefused):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database is at schema version {found}, newer than this callbot knows ({known}): "
            "run the callbot version that migrated it, or a newer one"
        )
        self.found = found
        self.known = known


class MigrationNotAllowed(SchemaRefused):
    """The role in DATABASE_URL may not apply the migrations this callbot needs (PostgreSQL: it
    owns not the tables, or may not create any); nothing was migrated."""

    def __init__(self, found: int, known: int, server_said: str) -> None:
        super().__init__(
            f"the database is at schema version {found} and this callbot needs {known}, but this "
            f"role may not migrate it ({server_said}): start this callbot once as the role that "
            "owns the tables (it migrates them at start-up; take a backup first: pg_dump), then "
            "the bots as this one (README: Databases)"
        )


class Row(Protocol):
    """A result row: by column name or by position (sqlite3.Row and asyncpg.Record both are)."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> Any: ...


class Connection(Protocol):
    """What a transaction or an atomic unit gets; `?` placeholders on both backends."""

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """The statement's rowcount (rows inserted, updated or deleted)."""

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]: ...


def dialect_of(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return POSTGRESQL
    if url.startswith("sqlite:"):
        return SQLITE
    raise DatabaseUrlError(
        "use sqlite:///PATH (like sqlite:///./callbot.db or sqlite:////var/lib/callbot/callbot.db) "
        "or postgresql://USER:PASSWORD@HOST:5432/DBNAME"
    )


def sqlite_path(url: str) -> str:
    """`sqlite:///./callbot.db` → `./callbot.db`; `sqlite:////var/lib/x.db` → `/var/lib/x.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise DatabaseUrlError(
            "only sqlite:/// URLs name a file, like sqlite:///./callbot.db or "
            "sqlite:////var/lib/callbot/callbot.db"
        )
    path = url[len(prefix):].partition("?")[0]
    if not path:
        raise DatabaseUrlError("the URL names no file (sqlite:///./callbot.db)")
    return path


def sqlite_busy_timeout_ms(url: str) -> int:
    """`sqlite:///./callbot.db?busy_timeout=MS` → MS; SQLITE_BUSY_TIMEOUT_MS when not given."""
    query = url.partition("?")[2]
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"busy_timeout"})
    if unknown or (query and not params):
        raise DatabaseUrlError(
            f"a sqlite:/// URL takes only ?busy_timeout=MILLISECONDS, not {query!r}"
        )
    if "busy_timeout" not in params:
        return SQLITE_BUSY_TIMEOUT_MS
    [value] = params["busy_timeout"][-1:]
    if not value.isdigit():
        raise DatabaseUrlError(f"busy_timeout is in whole milliseconds (like 5000), not {value!r}")
    return int(value)


def check_url(url: str) -> None:
    """Raise DatabaseUrlError unless `url` is one the bot can open."""
    if dialect_of(url) == SQLITE:
        sqlite_path(url)
        sqlite_busy_timeout_ms(url)
    else:
        _check_postgres_authority(url)


_ENCODE = "percent-encode them in the user name and password (@ %40, / %2F, ? %3F, # %23, : %3A)"


def _check_postgres_authority(url: str) -> None:
    """Refuse a PostgreSQL URL the driver would read otherwise than its writer meant: a password
    holding @, /, ? or # unencoded moves the host (or the port) into the password, or the
    password into the host or port, where the driver's errors show it. Never echoes the URL."""
    parts = urlsplit(url)
    if parts.netloc.count("@") > 1:
        raise DatabaseUrlError(f"the part before the host has more than one @: {_ENCODE}")
    hosts = parts.netloc.rpartition("@")[2]
    for host in hosts.split(","):
        port = host.rpartition("]")[2].partition(":")[2]
        if port and not port.isdigit():
            raise DatabaseUrlError(
                f"a port is not a number (the host is host or host:port); should the password "
                f"hold a character that ends the host, {_ENCODE}"
            )
        if port and not 0 < int(port) <= 65535:
            raise DatabaseUrlError("the port is not a port number (1 to 65535)")
    if "@" in parts.path:
        raise DatabaseUrlError(f"an @ follows the host: {_ENCODE}")


class Backend(Protocol):
    """One dialect's side of `Database` (see its docstring for what each method promises)."""

    async def open(self) -> None: ...
    async def open_read_only(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(
        self, migrations: Sequence[Migration], on_applied: Callable[[Migration], None]
    ) -> list[int]:
        """Apply those not applied yet, in order; `on_applied(m)` as each is committed."""
    async def schema_version(self) -> int: ...
    def transaction(self, *, exclusive: bool = False) -> AbstractAsyncContextManager[Connection]:
        ...
    async def atomic(
        self, unit: Callable[[Connection], Coroutine[Any, Any, T]], *, exclusive: bool = False
    ) -> T: ...
    async def execute(self, sql: str, params: tuple[Any, ...]) -> int: ...
    async def fetchone(self, sql: str, params: tuple[Any, ...]) -> Row | None: ...
    async def fetchall(self, sql: str, params: tuple[Any, ...]) -> list[Row]: ...
    async def erase(self, sql: str, params: tuple[Any, ...]) -> int: ...


def check_versions(applied: Iterable[int], migrations: Sequence[Migration]) -> None:
    """SchemaTooNew if the database was migrated further than `migrations` go."""
    known = max((m.version for m in migrations), default=0)
    found = max(applied, default=0)
    if found > known:
        raise SchemaTooNew(found, known)
