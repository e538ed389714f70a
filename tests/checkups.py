"""Helpers for the tests of `callbot check` (test_doctor*.py, and the Evo Voice evidence it checks):
its findings against the stand-ins, with no setting of the machine running the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.ops.check import Finding, Status, report, run_checkup
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn
from bot.storage.database import Database
from tests.conftest import bot_environment


def overrides(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, mode: str = "http", **env: str
) -> dict[str, Any]:
    values = bot_environment(mode, slack, evo, policy_path)
    values.update(env)
    return {"_env_file": None, **{k.lower(): v for k, v in values.items()}}


async def check(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, mode: str = "http", **env: str
) -> list[Finding]:
    return await run_checkup(**overrides(slack, evo, policy_path, mode, **env))


async def check_from_environment(
    env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """What `callbot check` prints and exits with, run in this process (no interpreter to start):
    the settings come from the environment, as the command's do."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    text, code = report(await run_checkup())
    return code, text


def by_subject(findings: list[Finding]) -> dict[str, Finding]:
    return {f.subject: f for f in findings}


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status is Status.FAIL]


async def migrated_database(policy_path: Path) -> Path:
    path = policy_path.parent / "callbot.db"
    db = Database(f"sqlite:///{path}")
    await db.open()
    await db.close()
    return path
