"""manifest.yml validates against Slack's official schema and agrees with the code."""

from __future__ import annotations

import jsonschema

from bot.listeners.call_command import CALL_COMMAND
from bot.ops.check_slack import GROUP_SCOPE, OPTIONAL_SCOPES, REQUIRED_SCOPES
from tests.conftest import load_schema, manifest


def test_manifest_validates_against_slacks_schema() -> None:
    jsonschema.validate(manifest(), load_schema())


def test_schema_catches_a_typo() -> None:
    broken = manifest()
    broken["features"]["slash_commands"][0]["shouldescape"] = False
    try:
        jsonschema.validate(broken, load_schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema should refuse an unknown key")


def test_manifest_declares_what_the_code_uses() -> None:
    data = manifest()
    commands = [c["command"] for c in data["features"]["slash_commands"]]
    assert commands == [CALL_COMMAND]
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    # Every scope `callbot check` asks for, the optional ones too (what each is for is there),
    # and none it does not.
    assert scopes == {*REQUIRED_SCOPES, GROUP_SCOPE, *OPTIONAL_SCOPES}
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["settings"]["interactivity"]["is_enabled"] is True


def test_the_commands_usage_hint_names_every_subcommand() -> None:
    """Slack shows the hint as the command is typed: a subcommand it leaves out is one people
    never find (only `/call help` would say it)."""
    from bot.calls.command_text import SUBCOMMANDS

    commands = manifest()["features"]["slash_commands"]
    [command] = [c for c in commands if c["command"] == CALL_COMMAND]
    named = SUBCOMMANDS | {"help"}
    words = command["usage_hint"].replace("|", " ").split()
    assert sorted(named) == sorted(w for w in words if w in named)
