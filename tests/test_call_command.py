"""`/call` end to end: the real bot, in HTTP mode and Socket Mode, against the loopback
stand-ins."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.evovoice.catalog import LIST_ALL_FLOWS_UP_TO
from bot.standins.evovoice import Gated, Respond
from bot.standins.slack import ApiCall, SlackStandIn
from tests.conftest import POLICY, POLICY_NO_REPEAT_QUESTION, BotFactory, BotUnderTest
from tests.follow_helpers import BIDI_CONTROL, audit_records, services

FULL = "+18144043093"
MASKED = "+1 814 ••• 3093"


def all_text(slack: SlackStandIn) -> str:
    """Everything the bot sent to Slack: messages and response_url posts."""
    parts = [str(call.params) for call in slack.calls]
    parts += [str(body) for bodies in slack.responses.values() for body in bodies]
    return "\n".join(parts)


async def test_call_places_one_call_and_confirms_in_a_thread(bot: BotUnderTest) -> None:
    ack, _ = await bot.command(f"{FULL} escalation")
    assert ack.status == 200
    await bot.settle()

    [post] = bot.evo.outgoing_posts
    assert post.json == {"flowId": "flow-esc", "numberToDial": FULL, "callerId": "+18145550100"}

    parent = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "thread_ts" not in c.params
    )
    assert parent.params["channel"] == "C0OPS"
    assert "<@U0MANAGER>" in parent.params["text"]
    assert MASKED in parent.params["text"] and "Escalation" in parent.params["text"]
    [reply] = [c for c in bot.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    session_id = next(iter(bot.evo.sessions))
    assert reply.params["channel"] == "C0OPS"
    assert session_id in reply.params["text"] and "+18145550100" in reply.params["text"]
    assert FULL not in all_text(bot.slack), "the full number must never reach Slack"


async def test_national_format_slug_and_explicit_caller_id(bot: BotUnderTest) -> None:
    await bot.command("(814) 404-3093 wake-up-call +1 814 555 0101")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json == {"flowId": "flow-wake", "numberToDial": FULL, "callerId": "+18145550101"}


async def test_a_caller_id_typed_in_national_format_is_read_in_the_default_region(
    bot: BotUnderTest,
) -> None:
    await bot.command(f"{FULL} escalation (814) 555-0101")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json == {"flowId": "flow-esc", "numberToDial": FULL, "callerId": "+18145550101"}


async def test_a_number_typed_in_full_width_digits_is_dialled_and_the_flow_kept_as_typed(
    bot: BotUnderTest,
) -> None:
    # CJK input methods type digits full-width. Only the numbers are folded: a flow whose name is
    # full-width is still that flow, not the ASCII "Escalation" it would fold to.
    bot.evo.flows.append({"id": "flow-wide", "name": "Ｅｓｃａｌａｔｉｏｎ", "accountId": "acct-1"})
    services(bot).catalog.forget()
    await bot.command("＋１ （８１４） ４０４－３０９３ Ｅｓｃａｌａｔｉｏｎ "
                      "＋１８１４５５５０１０１")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json == {"flowId": "flow-wide", "numberToDial": FULL, "callerId": "+18145550101"}
    parent = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "thread_ts" not in c.params
    )
    assert f"{MASKED} with flow “Ｅｓｃａｌａｔｉｏｎ”" in parent.params["text"]
    assert FULL not in all_text(bot.slack) and "４０４－３０９３" not in all_text(bot.slack)


async def test_an_alias_whose_flow_left_the_account_is_refused_before_dialling(
    bot: BotUnderTest,
) -> None:
    # The policy's alias page -> flow-page was checked at start-up; the flow was deleted since.
    bot.evo.flows[:] = [flow for flow in bot.evo.flows if flow["id"] != "flow-page"]
    services(bot).catalog.forget()  # as when the cached list expires
    _, url = await bot.command(f"{FULL} page")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "flow ID flow-page, which the Evo Voice account does not have" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_a_flow_name_with_markup_is_shown_escaped_in_the_parent(bot: BotUnderTest) -> None:
    # Flow names come from Evo Voice: one must not ping the channel or fake a mention.
    bot.evo.flows.append({"id": "flow-odd", "name": "Ops <!channel> & <@U0ADMIN>",
                          "accountId": "acct-1"})
    services(bot).catalog.forget()
    await bot.command(f"{FULL} flow-odd")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert post.json["flowId"] == "flow-odd"
    parent = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "thread_ts" not in c.params
    )
    assert "Ops &lt;!channel&gt; &amp; &lt;@U0ADMIN&gt;" in parent.params["text"]
    assert "<!channel>" not in str(parent.params) and "<@U0ADMIN>" not in str(parent.params)


async def test_a_flow_name_cant_turn_the_parent_s_line_around(bot: BotUnderTest) -> None:
    # A right-to-left override in a flow's name would show what follows it backwards: the flow
    # "Ops \u202e3903" reads "Ops 3093", and a number after it in the line reversed too.
    bot.evo.flows.append({"id": "flow-rlo", "name": "Ops \u202e3903 \u2067x\u2069",
                          "accountId": "acct-1"})
    services(bot).catalog.forget()
    await bot.command(f"{FULL} flow-rlo")
    await bot.settle()
    parent = await bot.slack.wait_for_call(
        "chat.postMessage", lambda c: "thread_ts" not in c.params
    )
    assert f"{MASKED} with flow “Ops 3903 x”" in parent.params["text"]
    assert not BIDI_CONTROL.search(all_text(bot.slack))


async def test_flow_alias_and_case_insensitive_names(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} PAGE")
    await bot.command(f"{FULL} daily CHECK")
    await bot.settle()
    assert sorted(p.json["flowId"] for p in bot.evo.outgoing_posts) == ["flow-daily", "flow-page"]


async def test_help_answers_in_the_ack_and_dials_nothing(bot: BotUnderTest) -> None:
    ack, _ = await bot.command("help")
    assert ack.status == 200
    assert "/call +18144043093 escalation" in ack.text
    assert "Usage: /call <number> <flow> [caller ID]" in ack.body["text"]  # the plain fallback
    # No [oncall] here: `/call test` rings with the on-call flow, and would be refused.
    assert "/call test" not in json.dumps(ack.body["blocks"])
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_subcommands_typed_in_full_width_letters_are_those_subcommands(
    bot: BotUnderTest,
) -> None:
    # A phone keyboard in a Japanese (or Chinese) input mode types letters full-width, as it
    # types a number's digits: "ｈｅｌｐ" is help, not a number that doesn't start right.
    plain, _ = await bot.command("help")
    for typed in ("ｈｅｌｐ", "ＨＥＬＰ", "？", "－－ｈｅｌｐ"):
        ack, _ = await bot.command(typed)
        assert ack.status == 200 and ack.body == plain.body, (typed, ack.text)
    _, url = await bot.command("history")
    [expected] = await bot.slack.wait_for_response(url)
    _, url = await bot.command("ｈｉｓｔｏｒｙ")
    [answer] = await bot.slack.wait_for_response(url)
    assert answer == expected
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_help_for_someone_without_a_role_says_what_needs_one(bot: BotUnderTest) -> None:
    # No [oncall] here: the note names only commands this bot has.
    ack, _ = await bot.command("help", user_id="U0NOBODY")
    blocks = json.dumps(ack.body["blocks"])
    assert ("Placing calls to any number and `/call history` need the Manager or "
            "SystemAdministrator role.") in blocks
    assert "oncall" not in blocks


async def test_help_when_the_roles_cannot_be_read_lists_everything_with_who_may_use_it(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.slack.fail("usergroups.users.list", "missing_scope")
    ack, _ = await bot.command("help", user_id="U0LEAD1")
    assert ack.status == 200
    assert "`/call history [@person | number]`: recent calls. _(Manager or SystemAdministrator)_" \
        in ack.text


async def test_help_when_the_roles_are_slow_lists_everything_within_slacks_deadline(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    # How long the help waits for the roles (a second by default) is no business of this test's.
    services(bot).help_budget_seconds = 0.05
    release = asyncio.Event()

    async def stuck_groups(call: ApiCall) -> None:
        await release.wait()

    bot.slack.on("usergroups.users.list", stuck_groups)
    ack, _ = await bot.command("help", user_id="U0LEAD1")  # the harness holds it to Slack's 3 s
    assert "_(Manager or SystemAdministrator)_" in ack.text
    release.set()
    bot.slack.off("usergroups.users.list")


async def test_a_call_waiting_on_the_same_slow_group_lookup_as_a_help_that_gave_up_is_placed(
    bot_factory: BotFactory,
) -> None:
    # Slack is slow to list S0LEADS. A lead's call waits on that lookup; /call help by another
    # lead joins it and gives up on it (the help is Slack's 3 s ack, its wait shortened here): the
    # call, sharing that lookup, must not be dropped with it (neither dialled nor told): it goes
    # ahead once Slack answers.
    bot = await bot_factory("http")
    services(bot).help_budget_seconds = 0.05
    slow = bot.slack.hold("usergroups.users.list")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD2")
    await slow.wait_until_held()
    ack, _ = await bot.command("help", user_id="U0LEAD1")
    assert "_(Manager or SystemAdministrator)_" in ack.text  # it listed everything instead
    assert slow.waiting == 1  # the help joined the call's lookup: one request to Slack
    slow.open()
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


async def test_user_without_a_role_is_told_which_roles_and_nothing_is_dialled(
    bot: BotUnderTest,
) -> None:
    _, url = await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert answer["response_type"] == "ephemeral"
    assert "Manager" in answer["text"] and "SystemAdministrator" in answer["text"]
    assert bot.evo.outgoing_posts == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_member_of_a_listed_user_group_may_call(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD2")
    await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 2
    # Cached: one lookup served both requests.
    assert len(bot.slack.calls_to("usergroups.users.list")) == 1


async def test_group_lookup_failure_is_explained(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.slack.fail("usergroups.users.list", "missing_scope")
    _, url = await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    [answer] = await bot.slack.wait_for_response(url)
    assert "usergroups:read" in answer["text"]
    await bot.settle()
    assert bot.evo.outgoing_posts == []
    [record] = await audit_records(bot)  # who may call could not be told: a role's refusal
    assert (record.decision, record.reason) == ("denied", "GroupLookupFailed")


async def test_a_caller_id_the_account_does_not_own_is_told_masked(bot: BotUnderTest) -> None:
    _, url = await bot.command(f"{FULL} escalation +1 814 555 0199")
    [answer] = await bot.slack.wait_for_response(url)
    assert "+1 814 ••• 0199 is not one of the account's phone numbers" in answer["text"]
    assert "5550199" not in str(answer)
    await bot.settle()
    assert bot.evo.outgoing_posts == []


async def test_a_group_lookup_failing_stops_nobody_listed_by_name_under_a_role(
    bot_factory: BotFactory,
) -> None:
    # Manager lists S0LEADS, which Slack won't list; U0ADMIN is a SystemAdministrator by name.
    bot = await bot_factory("http")
    bot.slack.fail("usergroups.users.list", "missing_scope")
    _, url = await bot.command(f"{FULL} escalation", user_id="U0ADMIN")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert all("usergroups:read" not in str(r) for r in bot.slack.responses_to(url))


async def test_a_user_group_that_does_not_exist_grants_nothing_and_warns_the_operators(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """`no_such_subteam` is a mistake in [roles]: "not allowed", never "try again in a minute"."""
    bot = await bot_factory("http")
    del bot.slack.usergroups["S0LEADS"]
    _, url = await bot.command(f"{FULL} escalation", user_id="U0LEAD1")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "Manager" in answer["text"] and "try again" not in answer["text"].lower()
    assert bot.evo.outgoing_posts == []
    warnings = [r for r in caplog.records
                if r.levelname == "WARNING" and "S0LEADS" in r.getMessage()]
    assert warnings and "does not exist" in warnings[0].getMessage()
    # People listed directly still may call.
    await bot.command(f"{FULL} escalation", user_id="U0MANAGER")
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+1 809 555 1234", "DO"),  # NANP but the Dominican Republic: region decides, not +1
        ("+1 900 555 0123", "premium"),
        ("+44 20 7946 0018", "GB"),
        ("814404309", "number"),  # too short for the US
        ("+1814404309٣", "plain 0-9"),  # an Arabic-Indic digit is not quietly cleaned
        ("+18144043093x12", "xtension"),
    ],
)
async def test_numbers_refused_by_policy_are_explained_and_not_dialled(
    bot_factory: BotFactory, number: str, expected: str
) -> None:
    bot = await bot_factory("http")
    _, url = await bot.command(f"{number} escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert expected in answer["text"]
    assert answer["response_type"] == "ephemeral"
    assert bot.evo.outgoing_posts == []


async def test_a_number_with_more_digits_than_e164_is_refused_where_its_country_may_be_called(
    bot_factory: BotFactory,
) -> None:
    # phonenumbers calls +49 201 00000000000 a valid German landline; with the country code it has
    # 16 digits, one more than E.164 allows, so it can't be sent to Evo Voice.
    policy = POLICY.replace('allowed_regions = ["US", "CA"]', 'allowed_regions = ["US", "DE"]')
    bot = await bot_factory("http", policy=policy)
    _, url = await bot.command("+49 201 00000000000 escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "more digits than a phone number can" in answer["text"]
    assert "00000000000" not in answer["text"]  # masked, as every number shown
    assert bot.evo.outgoing_posts == []


async def test_unknown_flow_lists_the_flows(bot: BotUnderTest) -> None:
    _, url = await bot.command(f"{FULL} escalate-now")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    for name in ("Escalation", "Wake Up Call", "Daily Check"):
        assert name in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_unknown_flow_among_as_many_as_are_all_listed_lists_every_one(
    bot_factory: BotFactory,
) -> None:
    # Exactly LIST_ALL_FLOWS_UP_TO flows: still "all of them", none of which is close to the word.
    bot = await bot_factory("http")
    extra = LIST_ALL_FLOWS_UP_TO - len(bot.evo.flows)
    bot.evo.flows.extend(
        {"id": f"flow-{i}", "name": f"Team {i} Rota", "accountId": "acct-1"} for i in range(extra)
    )
    services(bot).catalog.forget()
    _, url = await bot.command(f"{FULL} escalate-now")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    for flow in bot.evo.flows:
        assert f"“{flow['name']}”" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_unknown_flow_among_long_named_flows_still_says_what_to_do(
    bot_factory: BotFactory,
) -> None:
    # Ten flows named in hundreds of characters each were listed whole: the refusal ran past a
    # section's 3,000 characters, and Slack's clip took off the last names and what to type.
    bot = await bot_factory("http")
    bot.evo.flows[:] = [
        {"id": f"flow-{i}", "name": f"Team {i} " + "rota for the platform group " * 15,
         "accountId": "acct-1"} for i in range(LIST_ALL_FLOWS_UP_TO)
    ]
    services(bot).catalog.forget()
    _, url = await bot.command(f"{FULL} escalate-now")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    shown = answer["blocks"][0]["text"]["text"]
    assert shown.endswith("Use a flow's name or its slug (wake-up-call for “Wake Up Call”).")
    assert all(f"“Team {i} rota" in shown for i in range(LIST_ALL_FLOWS_UP_TO))
    assert bot.evo.outgoing_posts == []


async def test_unknown_flow_among_many_lists_the_closest(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.evo.flows.extend(
        {"id": f"flow-{i}", "name": f"Team {i} Rota", "accountId": "acct-1"} for i in range(30)
    )
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    _, url = await bot.command(f"{FULL} escalatoin")
    [answer] = await bot.slack.wait_for_response(url)
    assert "Escalation" in answer["text"]
    assert "Team 7 Rota" not in answer["text"]


async def test_ambiguous_flow_names_every_candidate(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    bot.evo.flows.append({"id": "flow-esc-2", "name": "escalation", "accountId": "acct-1"})
    bot.runtime.services.catalog.forget()  # type: ignore[union-attr]
    _, url = await bot.command(f"{FULL} escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "several flows" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_flow_list_is_cached_between_commands(bot_factory: BotFactory) -> None:
    bot = await bot_factory("http")
    before = len(bot.evo.requests_to("GET", "/flows"))
    # Five numbers: the same number again within a minute would ask "call again?" instead.
    await asyncio.gather(*(bot.command(f"+1814404309{i} escalation") for i in range(5)))
    await bot.settle()
    assert len(bot.evo.requests_to("GET", "/flows")) == before
    assert len(bot.evo.outgoing_posts) == 5


async def test_caller_id_not_owned_is_refused_before_dialling(bot: BotUnderTest) -> None:
    _, url = await bot.command(f"{FULL} escalation +18145550199")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "not one of the account's phone numbers" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_a_default_caller_id_the_account_no_longer_owns_is_refused_before_dialling(
    bot: BotUnderTest,
) -> None:
    # The policy's default caller ID (checked at start-up), released from the account since.
    bot.evo.phone_numbers[:] = [
        n for n in bot.evo.phone_numbers if n["phoneNumber"] != "+18145550100"
    ]
    services(bot).catalog.forget()  # as when the cached list expires
    _, url = await bot.command(f"{FULL} escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    assert "not one of the account's phone numbers" in answer["text"]
    assert bot.evo.outgoing_posts == []


async def test_an_account_without_numbers_refuses_the_default_caller_id_and_says_who_can_fix_it(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.evo.phone_numbers.clear()  # every number released from the account since start-up
    services(bot).catalog.forget()
    _, url = await bot.command(f"{FULL} escalation")
    [answer] = await bot.slack.wait_for_response(url)
    await bot.settle()
    text = answer["text"]
    assert "The default caller ID +1 814 ••• 0100 (default_caller_id in the policy file)" in text
    assert "not one of the account's phone numbers" in text and "Ask an admin" in text
    assert "Leave it out" not in text  # the requester gave no caller ID to leave out
    assert bot.evo.outgoing_posts == []


async def test_without_default_caller_id_the_server_picks(bot_factory: BotFactory) -> None:
    from tests.conftest import POLICY

    bot = await bot_factory("http", policy=POLICY.replace('default_caller_id = "+18145550100"', ""))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    [post] = bot.evo.outgoing_posts
    assert "callerId" not in post.json
    reply = bot.slack.calls_to("chat.postMessage")[-1]
    assert "chosen by Evo Voice" in reply.params["text"]


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
async def test_where_the_bot_cannot_post_the_response_url_carries_the_news(
    bot: BotUnderTest, error: str
) -> None:
    bot.slack.fail("chat.postMessage", error)
    _, url = await bot.command(f"{FULL} escalation", channel_id="G0PRIVATE")
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert MASKED in answers[0]["text"]
    assert "Call placed" in answers[1]["text"]
    assert all(a["response_type"] == "in_channel" for a in answers)
    # No buttons: a message posted through a response_url has no ts the bot learns, so a click
    # on them could name no call's status message.
    assert all(b["type"] != "actions" for a in answers for b in a.get("blocks") or [])


@pytest.mark.parametrize(("channel", "info", "public_scope"), [
    ("G0PRIVATE", {"is_member": False}, True),
    ("C0NOTJOINED", {"is_member": False}, False),
], ids=["private", "public-without-chat-write-public"])
async def test_a_channel_the_bot_is_not_in_gets_the_news_through_the_response_url(
    bot: BotUnderTest, channel: str, info: dict[str, object], public_scope: bool
) -> None:
    bot.slack.channels[channel] = info
    if not public_scope:
        bot.slack.bot_scopes = [s for s in bot.slack.bot_scopes or [] if s != "chat:write.public"]
    _, url = await bot.command(f"{FULL} escalation", channel_id=channel)
    answers = await bot.slack.wait_for_response(url, n=2)
    await bot.settle()
    [refused, *_] = bot.slack.calls_to("chat.postMessage")
    assert refused.response == {"ok": False, "error": (
        "channel_not_found" if channel.startswith("G") else "not_in_channel")}
    assert MASKED in answers[0]["text"] and "Call placed" in answers[1]["text"]


async def test_in_a_public_channel_it_has_not_joined_the_bot_posts_with_chat_write_public(
    bot: BotUnderTest,
) -> None:
    bot.slack.channels["C0NOTJOINED"] = {"is_member": False}
    await bot.command(f"{FULL} escalation", channel_id="C0NOTJOINED")
    await bot.settle()
    [parent] = bot.slack.channel_messages("C0NOTJOINED")
    [reply] = bot.slack.thread("C0NOTJOINED", parent.ts)
    assert "Call placed" in (reply.text or "")


async def test_where_neither_channel_nor_response_url_works_a_direct_message_tells_the_outcome(
    bot_factory: BotFactory,
) -> None:
    bot = await bot_factory("http")
    bot.slack.fail("chat.postMessage", "channel_not_found", when=lambda c: c["channel"] == "G0PRIV")
    url = bot.slack.response_url()
    bot.slack.expire_response_url(url)
    await bot.command(f"{FULL} escalation", response_url=url, channel_id="G0PRIV")
    await bot.settle()
    # Dialled at once, before anything was known about where the news could go.
    assert len(bot.evo.outgoing_posts) == 1
    [parent] = bot.slack.channel_messages("U0MANAGER")
    assert MASKED in (parent.text or "")
    [status] = bot.slack.thread(parent.channel, parent.ts)
    assert "Call placed" in (status.text or "")


async def test_ack_does_not_wait_for_a_slow_voice_api(bot: BotUnderTest) -> None:
    answer = asyncio.Event()  # the POST is answered only once the ack is in
    bot.evo.queue_outgoing(Gated(answer, Respond()))
    async with asyncio.timeout(10):  # an ack waiting for the answer would never come
        ack, _ = await bot.command(f"{FULL} escalation")
    assert ack.status == 200
    # The ack came back while the POST was still unanswered: no result is in the thread yet.
    assert [c for c in bot.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")] == []
    answer.set()
    await bot.settle()
    assert "Call placed" in bot.slack.calls_to("chat.postMessage")[-1].params["text"]


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_redelivered_command_rings_once(bot_factory: BotFactory, mode: str) -> None:
    from bot.standins.slack import slash_command_body, slash_command_payload

    # Without the repeat question: it would stop the copy on its own, by asking the requester
    # whether to call again, and hide a claim that no longer holds. The copy must go unnoticed.
    bot = await bot_factory(mode, policy=POLICY_NO_REPEAT_QUESTION)
    url = bot.slack.response_url()
    fields = dict(text=f"{FULL} escalation", response_url=url, trigger_id="111.222.abc")
    if bot.mode == "socket":
        payload = slash_command_payload(**fields)
        await bot.slack.send_envelope("slash_commands", payload)
        await bot.slack.send_envelope("slash_commands", payload)
    else:
        data = slash_command_body(**fields)
        assert (await bot.post_signed(data)).status == 200
        assert (await bot.post_signed(data)).status == 200
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 1
    assert len(bot.slack.channel_messages("C0OPS")) == 1  # one parent: one call
    assert bot.slack.responses_to(url) == []  # and no question about a second one


async def test_a_cold_burst_asks_slack_who_we_are_only_once(bot: BotUnderTest) -> None:
    await asyncio.gather(*(bot.command(f"+1814404{3000 + i} escalation") for i in range(40)))
    await bot.settle()
    assert len(bot.evo.outgoing_posts) == 40
    assert len(bot.slack.calls_to("auth.test")) == 1  # the start-up check, nothing per request


async def test_a_call_that_meets_a_bug_after_its_ack_tells_the_requester_the_reference(
    bot_factory: BotFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ack went out ("Placing the call…" comes after): a bug in the call's work is the
    requester's to hear, with the reference of the log line that holds its traceback."""
    bot = await bot_factory("http")

    async def a_bug(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(services(bot).catalog, "resolve_flow", a_bug)
    _, url = await bot.command(f"{FULL} escalation")
    [said] = await bot.slack.wait_for_response(url)
    await bot.settle()
    [record] = [r for r in caplog.records if "failed, reference " in r.getMessage()]
    reference = record.getMessage().rsplit("reference ", 1)[1]
    assert f"Something went wrong on our side (reference {reference})" in said["text"]
    assert record.exc_info is not None and getattr(record, "user_id", None) == "U0MANAGER"
    assert bot.evo.outgoing_posts == []
