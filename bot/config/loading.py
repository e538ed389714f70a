"""Reading the configuration: the policy file (TOML, at most MAX_POLICY_BYTES), and settings and
policy together with every problem of both reported at once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.config.policy import Policy, example_ids
from bot.config.problems import ConfigError, describe_problems
from bot.config.settings import Settings, load_settings, policy_path

# A policy file is a few kilobytes; anything much larger is the wrong file (or /dev/zero).
MAX_POLICY_BYTES = 1024 * 1024


def load_policy(path: Path) -> Policy:
    where = f"{path}: "
    try:
        raw = tomllib.loads(_read_policy_text(path))
    except FileNotFoundError:
        raise ConfigError(
            [f"CALLBOT_CONFIG: {path} does not exist (copy callbot.example.toml and edit it)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"CALLBOT_CONFIG: cannot read {path}: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([
            f"{where}arrays or tables are nested too deeply to read; a policy file needs at most "
            "a few levels"
        ]) from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_problems(exc, prefix=where, env=False)) from None


def _read_policy_text(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError([
            f"CALLBOT_CONFIG: {path} is larger than {MAX_POLICY_BYTES // 1024} KiB; name the "
            "policy file (copy callbot.example.toml)"
        ])
    return data.decode("utf-8")


def load_configuration(**overrides: Any) -> tuple[Settings, Policy]:
    """Settings and policy together, with every problem of both reported at once."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        problems += exc.problems
    path = settings.callbot_config if settings else policy_path(**overrides)
    policy: Policy | None = None
    try:
        policy = load_policy(path)
    except ConfigError as exc:
        problems += exc.problems
    placeholders = example_ids(policy, path) if policy is not None else None
    if placeholders:  # like .env's placeholders: nobody real could call, every caller refused
        problems.append(f"{path}: {placeholders[0]}; {placeholders[1]}")
    if problems or settings is None or policy is None:
        raise ConfigError(problems)
    return settings, policy
