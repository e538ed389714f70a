"""The docs match the code: every setting is documented, the quick start is what CI runs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from bot.config import Settings
from bot.runtime import ACK_GRACE_SECONDS, SHUTDOWN_GRACE_SECONDS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_and_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"`{name.upper()}`" in README, f"{name.upper()} is not documented in README.md"
        assert re.search(rf"^#? ?{name.upper()}=", example, re.M), (
            f"{name.upper()} not in .env.example"
        )


def test_the_proxy_variables_the_bot_reads_are_in_the_readme() -> None:
    """Not settings, but read all the same: slack_sdk reads HTTPS_PROXY and HTTP_PROXY for every
    Slack request, bot/evovoice/transport.py those and NO_PROXY for Evo Voice's."""
    settings = README.split("### Settings", 1)[1].split("\n### ", 1)[0]
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
        assert f"`{name}`" in settings, f"README's Settings do not say how {name} is read"


def test_quick_start_commands_are_what_ci_runs() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_users_guide_and_the_rest_lives_in_docs() -> None:
    parts = re.findall(r"^## (.+)$", README, re.M)
    assert parts[:3] == ["Try it", "Quick start", "Setting it up"]
    assert {"Using it", "Running it", "Troubleshooting"} <= set(parts)
    assert "bench:begin" not in README
    for doc in ("docs/benchmark.md", "docs/development.md"):
        assert (ROOT / doc).is_file() and f"]({doc})" in README


def test_the_container_section_gives_the_bot_time_to_stop() -> None:
    """Docker kills after 10 s by default, well inside the bot's own shutdown grace."""
    section = README.split("### Running in a container", 1)[1].split("\n### ", 1)[0]
    needed = 2 * SHUTDOWN_GRACE_SECONDS + ACK_GRACE_SECONDS  # drain, acks, escalations pause
    timeouts = [int(s) for s in re.findall(r"--stop-timeout (\d+)", section)]
    assert timeouts and all(t > needed for t in timeouts)
    assert f"stop_grace_period: {timeouts[0]}s" in section
    assert f"terminationGracePeriodSeconds: {timeouts[0]}" in section


def test_the_log_example_names_the_logger_its_line_is_logged_under() -> None:
    """Operators filter on the logger the README shows: it must be the one the line comes from."""
    example = re.search(r"`\S+ \S+ INFO (\S+) \[\w+\]: (call by [^`]*?) placed: session …`",
                        README)
    assert example, "README's Logs section lost its example line"
    logger_name = example.group(1)
    pattern = '"call by %s to %s (flow %s) placed: session %s"'
    modules = [path for path in (ROOT / "bot").rglob("*.py") if pattern in path.read_text()]
    assert len(modules) == 1, modules
    module = importlib.import_module(
        ".".join(modules[0].relative_to(ROOT).with_suffix("").parts))
    assert module.logger.name == logger_name, (
        f"README shows {logger_name}; the line is logged under {module.logger.name}")


def _layout_sections() -> dict[str, str]:
    """docs/development.md's map of bot/, by what each entry describes: "" for bot/'s own modules,
    "calls" for bot/calls/, "standins/slack" for bot/standins/slack/."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    package, sub = "", ""
    for line in block.split("\n"):
        top = re.match(r"^  (\S+)", line)
        nested = re.match(r"^    (\S+)", line)
        if top:
            package = top.group(1).rstrip("/") if top.group(1).endswith("/") else ""
            sub = ""
        elif nested and package:
            # A folder of the package (standins/slack/), or one of its own modules again.
            sub = nested.group(1).rstrip("/") if nested.group(1).endswith("/") else ""
        if line.startswith("bench/"):
            break
        key = f"{package}/{sub}" if sub else package
        sections[key] = sections.get(key, "") + line + "\n"
    return sections


def test_the_development_map_lists_every_module_of_bot_where_it_lives() -> None:
    sections = _layout_sections()
    bot = ROOT / "bot"
    for path in sorted(bot.rglob("*.py")):
        if path.name == "__init__.py" or "__pycache__" in path.parts:
            continue
        where = "/".join(path.relative_to(bot).parts[:-1])
        assert re.search(rf"(?<![\w/]){re.escape(path.name)}", sections.get(where, "")), (
            f"docs/development.md's layout does not list {path.relative_to(ROOT)}")
    for where, text in sections.items():
        folder = bot / where
        for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", text):
            assert (folder / name).is_file() or (bot / name).is_file(), (
                f"docs/development.md lists {name} under bot/{where}, where there is none")


def _keys_by_section(toml_text: str) -> dict[str, set[str]]:
    """The keys a TOML text shows, commented out or not, by section ("" for the top level)."""
    keys: dict[str, set[str]] = {"": set()}
    section = ""
    for line in toml_text.splitlines():
        line = line.strip().removeprefix("#").strip()
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            section = header.group(1)
            keys.setdefault(section, set())
            continue
        key = re.match(r"^(\w+)\s*=", line)
        if key:
            keys[section].add(key.group(1))
    return keys


def _policy_keys() -> dict[str, set[str]]:
    """The policy file's keys, by section, as the code reads them. [roles], [flows] and [people]
    are tables of names the operator chooses."""
    from bot.config import DialingRules, OnCallPolicy, Policy

    top = {field.alias or name for name, field in Policy.model_fields.items()}
    return {"": top - {"roles", "flows", "people", "policy", "oncall"},
            "policy": set(DialingRules.model_fields), "oncall": set(OnCallPolicy.model_fields)}


def test_the_example_policy_file_shows_every_key_and_no_other() -> None:
    """`callbot check`'s fix for a bad policy file says "callbot.example.toml shows every key"."""
    shown = _keys_by_section((ROOT / "callbot.example.toml").read_text())
    for section, keys in _policy_keys().items():
        assert shown.get(section) == keys, (
            f"callbot.example.toml [{section or 'top level'}]: missing "
            f"{sorted(keys - shown.get(section, set()))}, unknown "
            f"{sorted(shown.get(section, set()) - keys)}")


def test_the_readme_documents_every_policy_key_and_no_other() -> None:
    section = README.split("### The policy file", 1)[1].split("\n## ", 1)[0]
    blocks = "\n".join(re.findall(r"```toml\n(.*?)```", section, re.S))
    shown = _keys_by_section(blocks)
    table = set(re.findall(r"^\| `(\w+)` \|", section.split("[oncall]", 1)[1], re.M))
    expected = _policy_keys()
    assert shown[""] == expected[""]
    assert shown["policy"] == expected["policy"]
    assert table == expected["oncall"], (
        f"README's [oncall] table: missing {sorted(expected['oncall'] - table)}, unknown "
        f"{sorted(table - expected['oncall'])}")


def _uncommented_section(toml_text: str, name: str) -> dict[str, object]:
    """A section of a TOML text as it reads with its commented-out keys put back."""
    import tomllib

    body = re.split(r"\n#?\s*\[", toml_text.split(f"[{name}]", 1)[1], maxsplit=1)[0]
    lines = [re.sub(r"^#\s?(?=\w+\s*=)", "", line.strip()) for line in body.splitlines()[1:]]
    return tomllib.loads("\n".join(lines))


def test_the_policy_sections_defaults_are_the_ones_shown() -> None:
    """README and callbot.example.toml show `[policy]` with "defaults shown"."""
    from bot.config import Policy

    readme_section = README.split("### The policy file", 1)[1].split("```", 2)[1]
    for where, text in (("README.md", readme_section),
                        ("callbot.example.toml", (ROOT / "callbot.example.toml").read_text())):
        shown = _uncommented_section(text, "policy")
        base = {"roles": {"Manager": ["U0MANAGER"]}}
        defaults = Policy.model_validate(base)
        written = Policy.model_validate({**base, "policy": shown})
        assert set(written.rules.allowed_types) == set(defaults.rules.allowed_types), where
        assert written.confirm_outside == defaults.confirm_outside, where
        for key in ("blocked_prefixes", "per_user", "per_number", "per_day", "repeat_window"):
            assert getattr(written.rules, key) == getattr(defaults.rules, key), (where, key)


def test_the_readme_gives_each_oncall_key_its_default() -> None:
    import tomllib

    from bot.config import OnCallPolicy

    section = README.split("### On-call roster", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| .* \| ([^|]*) \|$", section, re.M)
    assert len(rows) == len(OnCallPolicy.model_fields)
    required = {"flow": "page", "rotation": ["U0ALICE"]}
    defaults = OnCallPolicy.model_validate(required)
    for key, default in rows:
        if default.strip() == "required":
            assert OnCallPolicy.model_fields[key].is_required(), key
            continue
        assert not OnCallPolicy.model_fields[key].is_required(), key
        if default.strip() == "none":
            assert not getattr(defaults, key), key
            continue
        value = tomllib.loads(f"v = {re.match(r'`([^`]*)`', default.strip()).group(1)}")["v"]
        assert getattr(OnCallPolicy.model_validate({**required, key: value}), key) == (
            getattr(defaults, key)), key


def test_every_callbot_command_and_option_is_in_the_readme_and_no_other() -> None:
    """`callbot --help`'s commands and each one's options are the ones README names."""
    import argparse

    from bot.__main__ import build_parser

    [commands] = [action for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)]
    parsers: dict[str, argparse.ArgumentParser] = dict(commands.choices)
    assert commands.metavar == "{" + ",".join(parsers) + "}", "callbot --help's usage line"
    code = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", README, re.S))
    code = re.sub(r"#.*|\"[^\"\n]*\"", "", code)  # comments, and messages the bot writes
    named = set(re.findall(r"(?<![\w-])(?:callbot|python -m bot) (?!callbot)([a-z][a-z-]*)", code))
    assert named == set(parsers), (
        f"README names {sorted(named - set(parsers))} that callbot lacks, and leaves out "
        f"{sorted(set(parsers) - named)}")
    for name, parser in parsers.items():
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    shown = rf"callbot {name}[^`\n]*? {re.escape(option)}\b|`{re.escape(option)}\b"
                    assert re.search(shown, README), f"README lacks `callbot {name} {option}`"
