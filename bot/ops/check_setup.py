"""`callbot check`: the settings, the policy file, and the Slack IDs it names."""

from __future__ import annotations

from pathlib import Path

from bot.config import (
    ConfigError,
    Settings,
    example_ids,
    load_policy,
    load_settings,
    policy_path,
)
from bot.ops.check_env_file import unset_references
from bot.ops.checkup import SETTING_FIXES, Checkup, count
from bot.ops.findings import Finding, Status, failed, passed


async def check_settings(c: Checkup) -> list[Finding]:
    # The .env that Settings reads (tests pass `_env_file=None`: none).
    env_file = c.overrides.get("_env_file", Settings.model_config.get("env_file"))
    expanded = unset_references(Path(str(env_file))) if env_file is not None else []
    try:
        c.settings = load_settings(**c.overrides)
    except ConfigError as exc:
        return [_setting_problem(problem) for problem in exc.problems] + expanded
    mode = "Socket Mode" if c.settings.socket_mode else "HTTP mode"
    return expanded or passed("Settings", f"complete and well-formed ({mode})")


def _setting_problem(problem: str) -> Finding:
    name, sep, message = problem.partition(": ")
    if sep and name.replace("_", "").isalnum() and name.isupper():
        fix = SETTING_FIXES.get(name, "fix it in .env or the environment (.env.example lists "
                                       "every setting)")
        return Finding(Status.FAIL, f"Setting {name}", message, fix)
    return Finding(Status.FAIL, "Settings", problem,
                   "fix it in .env or the environment (.env.example lists every setting)")


async def check_policy(c: Checkup) -> list[Finding]:
    path = c.settings.callbot_config if c.settings is not None else policy_path(**c.overrides)
    c.policy_path = path
    try:
        c.policy = load_policy(path)
    except ConfigError as exc:
        if not path.exists():
            fix = (f"copy callbot.example.toml to {path} and list who may call, or point "
                   "CALLBOT_CONFIG at the policy file")
        else:
            fix = f"edit {path} (callbot.example.toml shows every key)"
        return [Finding(Status.FAIL, "Policy file", problem, fix) for problem in exc.problems]
    callers = sum(len(ids) for ids in c.policy.roles.values())
    findings = passed(
        "Policy file",
        f"{path} is valid ({count(callers, 'Slack user or group', 'Slack users or groups')} "
        f"may call, {count(len(c.policy.flows), 'flow alias', 'flow aliases')})",
    )
    placeholders = example_ids(c.policy, path)
    if placeholders:
        findings += failed("Example IDs", *placeholders)
    return findings

