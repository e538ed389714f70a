"""manifest.yml validates against Slack's official schema and agrees with the code."""

from __future__ import annotations

import jsonschema

from bot.calls.form import PLACE_CALL_SHORTCUT_ID
from bot.listeners.call_command import CALL_COMMAND
from bot.oncall.escalation_form import ESCALATE_GLOBAL_SHORTCUT_ID, ESCALATE_MESSAGE_SHORTCUT_ID
from bot.ops.check_slack import GROUP_SCOPE, OPTIONAL_SCOPES, REQUIRED_SCOPES
from bot.standins.slack import global_shortcut_payload, message_shortcut_payload
from tests.conftest import BotFactory, load_schema, manifest
from tests.escalations import ROSTER
from tests.interactions import interact


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


async def test_every_shortcut_the_manifest_declares_opens_a_form_in_the_running_bot(
    bot_factory: BotFactory,
) -> None:
    """The manifest is what Slack offers people; a shortcut whose callback_id the bot doesn't
    handle (renamed on one side only) shows in Slack's menus and does nothing when chosen."""
    bot = await bot_factory("http", policy=ROSTER)
    shortcuts = manifest()["features"]["shortcuts"]
    assert {s["callback_id"] for s in shortcuts} == {
        PLACE_CALL_SHORTCUT_ID, ESCALATE_MESSAGE_SHORTCUT_ID, ESCALATE_GLOBAL_SHORTCUT_ID}
    for shortcut in shortcuts:
        trigger = bot.slack.new_trigger_id()
        if shortcut["type"] == "message":
            message = bot.slack.add_message("C0OPS", "db primary is down", user="U0SOMEONE")
            payload = message_shortcut_payload(
                callback_id=shortcut["callback_id"], message_ts=message.ts,
                message_text=message.text or "", trigger_id=trigger,
                response_url=bot.slack.response_url(), user_id="U0ADMIN",
            )
        else:
            payload = global_shortcut_payload(callback_id=shortcut["callback_id"],
                                              user_id="U0ADMIN", trigger_id=trigger)
        await interact(bot, payload)
        [opened] = await bot.slack.wait_for_calls(
            "views.open", 1, lambda call, sent=trigger: call.params.get("trigger_id") == sent)
        assert opened.ok, (shortcut["callback_id"], opened.brief())
