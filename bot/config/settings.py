"""The environment (or `.env`, or files named by `NAME_FILE`): `Settings`, validated at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.audit.spool import spool_path
from bot.config.problems import ConfigError, describe_problems
from bot.storage.database import DatabaseUrlError, check_url

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_EVOVOICE_URL = "https://team.evovoice.io"
DEFAULT_POLICY_PATH = Path("./callbot.toml")
DEFAULT_DATABASE_URL = "sqlite:///./callbot.db"
DEFAULT_PORT = 3000

# Slack tokens and secrets are printable ASCII without spaces; a line break or a space inside one
# (a secrets file pasted with its newline, two lines joined) would otherwise reach an HTTP header.
_TOKEN_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")
# The Evo Voice login may hold spaces, but never a line break or another control character.
_LOGIN_JUNK = re.compile(r"[\x00-\x1f\x7f]")

# The values .env.example ships with: a clear "fill me in" beats a network error at start-up.
_PLACEHOLDERS = frozenset({"xoxb-your-bot-token", "xapp-your-app-level-token", "change-me"})


def _blank_to_none(value: Any) -> Any:
    # `.env.example` ships `SLACK_APP_TOKEN=`; an empty value means "not set", not "set to ''".
    if isinstance(value, str) and not value.strip():
        return None
    return value


class Settings(BaseSettings):
    """Environment variables (or `.env`). Secrets are `SecretStr` so they never print."""

    # allow_inf_nan=False: "nan" passes no bound and would be told about one.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True,
        allow_inf_nan=False,
    )

    slack_bot_token: SecretStr
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    evovoice_url: str = DEFAULT_EVOVOICE_URL
    # Where the login is tried when EVOVOICE_URL refuses it, to say "set EVOVOICE_URL=…" instead
    # of blaming the password; empty: the other of evovoice.io and team.evovoice.io.
    evovoice_other_url: str | None = None
    # simulate: real Slack, calls to a simulated Evo Voice inside the bot (bot/evovoice/simulator).
    evovoice_mode: Literal["live", "simulate"] = "live"
    # Required when live; declared after evovoice_mode, which their validator reads.
    evovoice_username: str = ""
    evovoice_password: SecretStr = SecretStr("")
    evovoice_account_id: str | None = None
    evovoice_timeout: float = Field(default=15.0, gt=0, le=120)  # seconds to wait for an answer
    # An Evo Voice request that could not connect (nothing sent), or a read whose answer was lost
    # or a 502/503/504: the pause before it is tried again (doubling; the client's own default,
    # bot/evovoice/requester.py DEFAULT_RETRY_BACKOFF).
    evovoice_retry_seconds: float = Field(default=0.5, gt=0, le=30)
    # The process's budget of Evo Voice requests; polls stay within it (bot/evovoice/budget.py).
    evovoice_requests_per_minute: float = Field(default=120.0, gt=0, le=60_000)
    callbot_config: Path = DEFAULT_POLICY_PATH
    database_url: str = DEFAULT_DATABASE_URL
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (tests)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Key of the audit trail's number hashes; empty: one generated and kept in the database.
    audit_hash_key: SecretStr | None = None
    # Following calls: the first poll interval, the back-off's ceiling, how long to look for the
    # session of an unconfirmed call, and the most time any call is followed.
    call_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    call_poll_max_seconds: float = Field(default=15.0, gt=0, le=600)
    call_find_seconds: float = Field(default=120.0, gt=0, le=3600)
    call_follow_max_minutes: float = Field(default=240.0, gt=0, le=24 * 60)
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log collectors
    # uvloop: libuv's loop, in C (bot/ops/event_loop.py); asyncio: Python's own.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Several replicas: a replica that dies has its followed calls and escalations taken over by
    # another within this many seconds (bot/storage/leases.py).
    lease_seconds: float = Field(default=15.0, ge=3, le=300)
    # The file where audit records wait for a failing database (bot/audit/spool.py); empty: beside
    # a SQLite file, ./callbot.audit-spool for PostgreSQL; `off`: they wait in memory.
    audit_spool: str | None = None
    # Slack or Evo Voice unreachable at start-up: the first pause before trying again (it doubles,
    # up to bot.runtime.RECONNECT_MAX_SECONDS).
    startup_retry_seconds: float = Field(default=1.0, gt=0, le=30)

    @field_validator(
        "slack_app_token", "slack_signing_secret", "evovoice_account_id", "evovoice_other_url",
        "audit_hash_key", "audit_spool", mode="before",
    )
    @classmethod
    def _optional(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator(
        "slack_api_url", "evovoice_url", "evovoice_other_url", "evovoice_account_id",
        "database_url", mode="before",
    )
    @classmethod
    def _trimmed(cls, value: Any) -> Any:
        # `docker run --env-file` and a quoted Kubernetes value keep the spaces around a value
        # (.env's reader drops them): a URL holding them named another host or SQLite file.
        return value.strip() if isinstance(value, str) else value

    @field_validator("callbot_config", mode="before")
    @classmethod
    def _default_when_blank(cls, value: Any) -> Any:
        # `CALLBOT_CONFIG=` means "not set": the default file, not the directory ".".
        return DEFAULT_POLICY_PATH if _blank_to_none(value) is None else value

    @field_validator(
        "slack_bot_token", "slack_app_token", "slack_signing_secret", "evovoice_password"
    )
    @classmethod
    def _not_placeholder(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        simulated = info.data.get("evovoice_mode") == "simulate"
        if simulated and info.field_name == "evovoice_password":
            return value  # not used when simulating: the .env.example line may stay as it is
        if value is not None and value.get_secret_value() in _PLACEHOLDERS:
            raise ValueError(
                "still holds the placeholder from .env.example; put the real value in .env"
            )
        return value

    @field_validator("evovoice_username", "evovoice_password")
    @classmethod
    def _needed_when_live(cls, value: str | SecretStr, info: ValidationInfo) -> str | SecretStr:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw.strip() and info.data.get("evovoice_mode", "live") == "live":
            raise ValueError("is required but not set")
        return value

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _no_junk_in_token(cls, value: Any) -> Any:
        if isinstance(value, str):
            # A secrets file usually ends with a newline: that one is not part of the token.
            value = value.strip()
            if _TOKEN_JUNK.search(value):
                raise ValueError(
                    "contains a line break, a space or a control character; copy the token again "
                    "as one line"
                )
        return value

    @field_validator("evovoice_username", "evovoice_password", mode="before")
    @classmethod
    def _no_junk_in_login(cls, value: Any) -> Any:
        if isinstance(value, str) and _LOGIN_JUNK.search(value):
            raise ValueError(
                "contains a line break or a control character; set it again as one line"
            )
        return value

    @field_validator("audit_hash_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "must be at least 16 characters (e.g. `openssl rand -hex 32`), or empty to let "
                "the bot keep its own key in the database"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("evovoice_mode", "log_format", "event_loop", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb- (OAuth & Permissions page)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "must be an app-level token starting with xapp- (Basic Information page, "
                "scope connections:write); leave it empty for HTTP mode"
            )
        return value

    @field_validator("slack_api_url", "evovoice_url", "evovoice_other_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        # The authority is what sits between "//" and the next "/", "?" or "#".
        if "@" in re.split(r"[/?#]", value.split("//", 1)[1], maxsplit=1)[0]:
            # Never echo the value: what precedes the @ is a password.
            raise ValueError(
                "must not contain a user name or password (user:password@…); put them in "
                "EVOVOICE_USERNAME and EVOVOICE_PASSWORD (SLACK_API_URL: take them out)"
            )
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto the base URL; without the slash "api" +
        # "chat.postMessage".
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            check_url(value)
        except DatabaseUrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _poll_ceiling(self) -> Settings:
        if self.call_poll_max_seconds < self.call_poll_seconds:
            raise ValueError("CALL_POLL_MAX_SECONDS must not be less than CALL_POLL_SECONDS")
        return self

    @model_validator(mode="after")
    def _mode_needs(self) -> Settings:
        if self.slack_app_token is None and self.slack_signing_secret is None:
            raise ValueError(
                "SLACK_SIGNING_SECRET is required in HTTP mode (set it, or set SLACK_APP_TOKEN "
                "for Socket Mode)"
            )
        return self

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def audit_spool_path(self) -> Path | None:
        """Where audit records wait for a failing database; None: in memory."""
        return spool_path(self.audit_spool, self.database_url)


FILE_SUFFIX = "_FILE"
_ENV_FILE = Settings.model_config.get("env_file")


def settings_from_files(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Settings read from the files that `NAME_FILE` variables name (Docker and Kubernetes secrets).

    Only the environment is searched for `NAME_FILE`; a value in the environment for NAME itself
    makes it ambiguous, which is a problem rather than a silent choice.
    """
    environ = os.environ if environ is None else environ
    present = {key.upper(): value for key, value in environ.items()}
    values: dict[str, str] = {}
    problems: list[str] = []
    for field in Settings.model_fields:
        name = field.upper()
        path = present.get(name + FILE_SUFFIX)
        if not path:
            continue
        if name in present:
            problems.append(f"{name}: both {name} and {name}{FILE_SUFFIX} are set; keep one")
            continue
        try:
            # Secret files usually end with a newline that is no part of the secret; some editors
            # (Windows' Notepad until 2019) begin them with a byte order mark, invisible, which
            # is no part of it either ("utf-8-sig" drops it).
            values[field] = Path(path).read_text(encoding="utf-8-sig").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"{name}: cannot read {name}{FILE_SUFFIX} ({path}): {reason}")
    return values, problems


def unread_file_settings(env_file: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """A problem for each `NAME_FILE` in `.env` that nothing else in the environment stands in
    for: it is not read (the environment only), and the setting was left at its default."""
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return []
    from dotenv import dotenv_values  # pydantic-settings' own reader of .env

    present = {key.upper() for key in (os.environ if environ is None else environ)}
    named = {key.upper() for key in dotenv_values(env_file, interpolate=False)}
    return [f"{name}{FILE_SUFFIX}: named in {env_file}, where NAME_FILE is not read (the "
            f"environment only): set it in the environment, or {name} itself in {env_file}"
            for name in (field.upper() for field in Settings.model_fields)
            if name + FILE_SUFFIX in named and not {name, name + FILE_SUFFIX} & present]


class _AloneSettings(BaseSettings):
    """The settings read alone, where `Settings` reads them, for when other settings are wrong
    (policy_path, database_url)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    callbot_config: str = ""
    database_url: str = ""
    audit_spool: str = ""
    lease_seconds: str = ""


def policy_path(**overrides: Any) -> Path:
    """CALLBOT_CONFIG read from where `Settings` reads it (arguments, `NAME_FILE`, the environment,
    `.env`), for when other settings are wrong: the policy file checked is still the one named."""
    from_files, _ = settings_from_files()
    arguments = {key: value for key, value in {**from_files, **overrides}.items()
                 if key in ("callbot_config", "_env_file")}
    try:
        configured = _AloneSettings(**arguments).callbot_config
    except ValidationError:
        configured = ""
    return Path(configured or DEFAULT_POLICY_PATH)


def database_url(**overrides: Any) -> str:
    """DATABASE_URL read from where `Settings` reads it (arguments, `DATABASE_URL_FILE`, the
    environment, `.env`), for the commands that need nothing else (`callbot backup`, `callbot
    migrate-db`, `callbot check`'s database line): they act on the database the bot uses even
    while other settings are wrong. A DATABASE_URL_FILE that can't be read, or one set beside
    DATABASE_URL, is DatabaseUrlError."""
    from_files, problems = settings_from_files()
    problems += unread_file_settings(overrides.get("_env_file", _ENV_FILE))
    for problem in problems:
        if problem.startswith(("DATABASE_URL:", "DATABASE_URL_FILE:")):
            raise DatabaseUrlError(problem.removeprefix("DATABASE_URL: "))
    arguments = {key: value for key, value in {**from_files, **overrides}.items()
                 if key in ("database_url", "_env_file")}
    if "database_url" in arguments:
        return str(arguments["database_url"]).strip() or DEFAULT_DATABASE_URL
    return _AloneSettings(**arguments).database_url.strip() or DEFAULT_DATABASE_URL


def audit_spool_path(database_url: str) -> Path | None:
    """The spool (AUDIT_SPOOL, read where `Settings` reads it) of the bots of `database_url`, for
    `callbot migrate-db`; None: they keep no spool."""
    from_files, _ = settings_from_files()
    setting = from_files.get("audit_spool")
    if setting is None:  # every field of _AloneSettings is a str: nothing there fails validation
        setting = _AloneSettings().audit_spool
    return spool_path(setting.strip() or None, database_url)


def lease_seconds() -> float:
    """LEASE_SECONDS read where `Settings` reads it, for `callbot migrate-db` (how recently a
    running bot was last seen); the default where it is unset or one the bot would refuse."""
    from_files, _ = settings_from_files()
    setting = from_files.get("lease_seconds", _AloneSettings().lease_seconds)
    field = Settings.model_fields["lease_seconds"]
    try:
        return TypeAdapter(Annotated[float, field]).validate_python(setting)
    except ValidationError:
        return float(field.default)


def load_settings(**overrides: Any) -> Settings:
    from_files, problems = settings_from_files()
    problems += unread_file_settings(overrides.get("_env_file", _ENV_FILE))
    arguments = {**from_files, **overrides}
    try:
        settings = Settings(**arguments)
    except ValidationError as exc:
        described = describe_problems(exc, prefix="", env=True)
        named = {problem.partition(":")[0].removesuffix(FILE_SUFFIX) for problem in problems}
        raise ConfigError(problems + [p for p in described
                                      if p.partition(":")[0] not in named]) from None
    if problems:
        raise ConfigError(problems)
    return settings
