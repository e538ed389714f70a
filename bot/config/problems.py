"""What is wrong with a configuration, one line per problem, so that an operator fixes a broken one
in one pass: each line names the setting (`SLACK_BOT_TOKEN: …`, `callbot.toml: oncall.flow: …`)."""

from __future__ import annotations

from pydantic import ValidationError


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DependencyUnavailable(ConfigError):
    """Slack or Evo Voice could not be reached (or failed) at start-up: nothing to fix in the
    configuration yet, maybe. A running bot waits for it instead of exiting."""


def describe_problems(error: ValidationError, *, prefix: str, env: bool) -> list[str]:
    problems = []
    for item in error.errors():
        # A bad dict key is reported at (..., key, "[key]"): name the entry, as for a bad value.
        loc = [str(part) for part in item["loc"] if part != "[key]"]
        if env:
            name = loc[0].upper() if loc else "settings"
        else:
            name = ".".join(loc) if loc else "file"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set" if env else "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling)"
        problems.append(f"{prefix}{name}: {message}" if loc else f"{prefix}{message}")
    return problems
