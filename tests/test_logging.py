"""Logs: text or JSON (`LOG_FORMAT`), one line per record, a request id on every line about a Slack
request and in any error reference shown to the user, and nothing secret in either format."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.config import ConfigError, load_settings
from bot.errors import describe_any, reference_id
from bot.ops.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    LogFormat,
    OneLineFormatter,
    current_request_id,
    make_handler,
    request_context,
)
from bot.standins.evovoice import ErrorStatus, EvoVoiceStandIn, TooManyRequests
from bot.standins.slack import SlackStandIn, sign, slash_command_body
from tests.conftest import (
    APP_TOKEN,
    BOT_TOKEN,
    EVO_PASSWORD,
    SIGNING_SECRET,
    BotFactory,
    BotUnderTest,
    bot_environment,
    until,
)
from tests.log_capture import logged
from tests.processes import BotProcess, run_cli

FULL = "+18144043093"
SECRETS = (FULL, "4043093", EVO_PASSWORD, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, "/response/")


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.LogRecord("bot.test", logging.WARNING, __file__, 1, message, args,
                             (type(exc), exc, exc.__traceback__) if exc else None)


def test_json_lines_carry_the_fields_and_the_request_id() -> None:
    with request_context("abc12345"):
        line = JsonFormatter().format(record("call to %s\nfake line", "+1 814 ••• 3093"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "bot.test"
    assert entry["message"] == "call to +1 814 ••• 3093\nfake line"
    assert entry["request_id"] == "abc12345"
    assert entry["time"].endswith("Z")
    assert "exception" not in entry


def test_json_lines_include_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        line = JsonFormatter().format(record("failed", exc=exc))
    entry = json.loads(line)
    assert "RuntimeError: boom" in entry["exception"] and entry["request_id"] is None


def test_text_lines_show_the_request_id_only_inside_a_request() -> None:
    formatter = OneLineFormatter(TEXT_FORMAT)
    assert "bot.test: hello" in formatter.format(record("hello"))
    with request_context("abc12345"):
        assert "bot.test [abc12345]: hello" in formatter.format(record("hello"))
    assert "\n" not in formatter.format(record("a\nb"))


@pytest.mark.parametrize("line_break", ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029"])
def test_a_traceback_cannot_start_a_line_of_its_own(line_break: str) -> None:
    # An exception's text may quote what someone typed; its lines stay under their record, and
    # so do the record's own words, whatever breaks the line (log viewers break at all of these).
    forged = f"bad input{line_break}2030-01-01 00:00:00,000 INFO bot.calls.service: forged"
    try:
        raise ValueError(forged)
    except ValueError as exc:
        text = OneLineFormatter(TEXT_FORMAT).format(record("failed: %s", forged, exc=exc))
    head, traceback, *rest = text.splitlines()
    assert head.startswith("20") and "bot.test: failed: bad input" in head
    assert traceback.startswith("Traceback")
    assert rest and all(line.startswith("  |") for line in rest), rest


def test_the_chatty_libraries_are_held_to_warnings_and_above() -> None:
    stream = io.StringIO()
    handler = make_handler("text", stream)
    for name, level in [("slack_bolt.App", logging.INFO), ("slack_sdk", logging.DEBUG),
                        ("httpx", logging.INFO), ("aiohttp.access", logging.INFO),
                        ("slack_bolt.App", logging.WARNING), ("httpx", logging.ERROR),
                        ("bot.calls.service", logging.DEBUG)]:
        handler.handle(logging.LogRecord(name, level, __file__, 1, "from %s", (name,), None))
    lines = stream.getvalue().splitlines()
    # Their requests and payloads never (numbers, response_urls); their warnings always.
    assert [line.split(": ", 1)[1] for line in lines] == [
        "from slack_bolt.App", "from httpx", "from bot.calls.service"]


async def test_tasks_started_in_a_request_keep_its_id() -> None:
    async def later() -> str | None:
        await asyncio.sleep(0)
        return current_request_id()

    with request_context("abc12345"):
        task = asyncio.create_task(later())
    assert current_request_id() is None
    assert await task == "abc12345"


def test_an_unexpected_error_is_referenced_by_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with request_context("abc12345"):
        assert reference_id() == "abc12345"
        text = describe_any(RuntimeError("bug"))
    assert "(reference abc12345)" in text
    assert "reference abc12345" in caplog.text
    assert len(reference_id()) == 8  # outside a request: a fresh one


def test_log_format_setting() -> None:
    base = {"_env_file": None, "slack_bot_token": "xoxb-1", "slack_app_token": "xapp-1",
            "evovoice_username": "u", "evovoice_password": "p"}
    assert load_settings(**base).log_format == "text"
    assert load_settings(**base, log_format="JSON").log_format == "json"
    with pytest.raises(ConfigError) as raised:
        load_settings(**base, log_format="xml")
    assert raised.value.problems[0].startswith("LOG_FORMAT: Input should be 'text' or 'json'")


@pytest.fixture(params=["text", "json"])
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    with logged(request.param) as stream:
        yield request.param, stream


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the bot logs at INFO, as LOG_FORMAT=json writes it."""
    with logged("json") as stream:
        yield stream


def request_ids(log_format: str, text: str, needle: str) -> set[str | None]:
    """The request ids of the lines that mention `needle`."""
    ids: set[str | None] = set()
    for line in text.splitlines():
        if needle not in line:
            continue
        if log_format == "json":
            ids.add(json.loads(line)["request_id"])
        else:
            head = line.split(": ", 1)[0]
            ids.add(head.split("[")[1].rstrip("]") if "[" in head else None)
    return ids


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_every_line_about_a_request_has_its_id_and_nothing_secret(
    mode: str, bot_factory: BotFactory, captured: tuple[str, io.StringIO]
) -> None:
    log_format, stream = captured
    bot = await bot_factory(mode)
    bot.evo.queue_outgoing(TooManyRequests())
    await bot.command(f"{FULL} escalation")
    await bot.command(f"{FULL} escalation", user_id="U0INTRUDER")
    await bot.settle()
    text = stream.getvalue()

    if log_format == "json":
        [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    # The voice API's answer and the bot's verdict on it, logged in the background task.
    [failed] = request_ids(log_format, text, "failed: RateLimited")
    assert failed is not None
    assert request_ids(log_format, text, "Evo Voice POST /sessions/outgoing") == {failed}
    [refused] = request_ids(log_format, text, "call refused for U0INTRUDER")
    assert refused is not None and refused != failed
    # Start-up isn't about a request.
    assert request_ids(log_format, text, "callbot ready") in (set(), {None})
    for secret in SECRETS:
        assert secret not in text, secret


async def test_the_reference_of_an_unexpected_error_is_the_request_id(
    bot: BotUnderTest, captured: tuple[str, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    log_format, stream = captured

    def bug(_: str) -> None:
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr("bot.listeners.call_command.parse_command", bug)
    ack, _ = await bot.command(f"{FULL} escalation")
    shown = ack.text.split("(reference ")[1].split(")")[0]
    assert len(shown) == 8
    assert request_ids(log_format, stream.getvalue(), "unhandled error in a listener") == {shown}
    assert FULL not in stream.getvalue()


async def test_python_m_bot_logs_json_lines_with_request_ids(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    env = bot_environment("http", slack, evo, policy_path)
    env["LOG_FORMAT"] = "json"
    bot = await BotProcess.start(env, policy_path.parent)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                async with http.get(bot.base + "/healthz") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the bot never became healthy")
            data = slash_command_body(text=f"{FULL} escalation", response_url=slack.response_url())
            async with http.post(bot.base + "/slack/events", data=data,
                                 headers=sign(data, SIGNING_SECRET)) as response:
                assert response.status == 200
            await slack.wait_for_call("chat.postMessage", lambda c: "Call placed" in
                                      str(c.params.get("text")), timeout=10)
    finally:
        code = await bot.stop(signal.SIGTERM)
    output = bot.output()
    assert code == 0, output
    entries = [json.loads(line) for line in output.splitlines()]
    assert any(e["message"].startswith("callbot ready") for e in entries)
    assert any(e["message"] == "callbot stopped" for e in entries)
    # LOG_LEVEL unset: INFO. Routine reads (start-up's GET /auth/status answered 200) are DEBUG.
    assert {e["level"] for e in entries} <= {"INFO", "WARNING", "ERROR", "CRITICAL"}
    [placed] = [e for e in entries if " placed: session " in e["message"]]
    assert placed["request_id"] and placed["logger"] == "bot.calls.service"
    for secret in SECRETS:
        assert secret not in output


def test_json_lines_carry_the_structured_fields_a_record_has() -> None:
    entry = json.loads(JsonFormatter().format(logging.makeLogRecord({
        "name": "bot.calls.follow", "levelno": logging.INFO, "levelname": "INFO",
        "msg": "call %s ended", "args": (7,), "call_id": 7, "session_id": "sess-1",
        "outcome": "answered", "user_id": "U0MANAGER", "escalation_id": None,
    })))
    assert (entry["call_id"], entry["session_id"], entry["outcome"], entry["user_id"]) == (
        7, "sess-1", "answered", "U0MANAGER")
    assert "escalation_id" not in entry  # absent, not null


async def test_routine_polls_log_at_debug_and_what_happened_at_info(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    from tests.follow_helpers import FAST, end_session, services

    bot = await bot_factory("http", **FAST)
    await bot.command(f"{FULL} escalation")
    await bot.evo.wait_for_posts(1)
    [session_id] = bot.evo.sessions
    [call_id] = [row[0] for row in await services(bot).db.fetchall("SELECT id FROM calls")]
    await until(lambda: len(bot.evo.reads_of(session_id)) >= 3)  # polled a few times, ringing
    bot.evo.set_session_state(session_id, callState="Connected")  # answered: a change
    await until(lambda: f"call {call_id}: " in json_lines.getvalue())
    end_session(bot, session_id, after_seconds=5, outcome="Completed")
    await until(lambda: "ended" in json_lines.getvalue())
    entries = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    messages = [e["message"] for e in entries]
    assert not any("GET /sessions" in m for m in messages)  # polls: DEBUG
    assert not any("POST /sessions/outgoing" in m for m in messages)  # "placed" says it
    [changed] = [e for e in entries if e["message"].startswith(f"call {call_id}: ")]
    assert changed["level"] == "INFO"  # what happened: INFO, with the call and its session
    assert (changed["call_id"], changed["session_id"]) == (call_id, session_id)
    [ended] = [e for e in entries if "ended" in e["message"]]
    assert ended["session_id"] == session_id and ended["outcome"] == "answered"
    assert isinstance(ended["call_id"], int)
    [placed] = [e for e in entries if "placed: session" in e["message"]]
    assert placed["user_id"] == "U0MANAGER" and placed["outcome"] == "placed"
    assert placed["session_id"] == session_id


async def test_a_refused_call_logs_who_asked_and_that_it_failed(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    bot = await bot_factory("http")
    bot.evo.queue_outgoing(ErrorStatus(400, "Invalid flow"))
    await bot.command(f"{FULL} escalation")
    await bot.settle()
    entries = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    [failed] = [e for e in entries if ") failed: " in e["message"]]
    assert failed["level"] == "WARNING"
    assert (failed["user_id"], failed["outcome"]) == ("U0MANAGER", "failed")


async def test_an_escalations_lines_carry_its_id(
    bot_factory: BotFactory, json_lines: io.StringIO,
) -> None:
    from tests.escalations import (
        IN_ALICES_SHIFT,
        ROSTER,
        Clock,
        escalation_message,
        metrics_text,
        open_on_message,
        submit,
        wait_for_edit,
    )
    from tests.follow_helpers import services

    bot = await bot_factory("http", policy=ROSTER)
    clock = Clock()
    services(bot).oncall.clock = lambda: IN_ALICES_SHIFT
    services(bot).escalations.clock = clock
    view, _ = await open_on_message(bot)
    await submit(bot, view)
    escalation = await escalation_message(bot)
    for step in ("1. <@U0ALICE> (+1 814 ••• 3093)", "2. <@U0BOB> (+1 814 ••• 3094)",
                 "4. <@U0MANAGER> (escalate_to) (+1 814 ••• 3090)"):
        await wait_for_edit(bot, escalation, f"{step} — 🔔")
        clock.advance(91)
        await wait_for_edit(bot, escalation, f"{step} — ❌ no answer after 90 s")
    await until(lambda: "nobody answered" in json_lines.getvalue())
    entries = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    [started] = [e for e in entries if e["message"].startswith("escalation ")
                 and " started: " in e["message"]]
    escalation_id = started["escalation_id"]
    assert isinstance(escalation_id, int) and started["user_id"] == "U0ADMIN"
    [step] = [e for e in entries if e["message"].startswith(f"escalation {escalation_id}: step 1")]
    assert (step["escalation_id"], step["user_id"], step["outcome"]) == (
        escalation_id, "U0ALICE", "no_answer")
    assert isinstance(step["call_id"], int)
    [ended] = [e for e in entries if "nobody answered" in e["message"]]
    assert (ended["escalation_id"], ended["outcome"]) == (escalation_id, "exhausted")
    assert 'escalations_total{outcome="exhausted"} 1.0' in metrics_text(bot)


@pytest.mark.parametrize(("quoted", "shown"), [
    ("+18144043093", "+1 814 ••• 3093"),
    ("+1 (814) 404-3093", "+1 814 ••• 3093"),
    ("(814) 404-3093", "(•••93"),
    ("GET /sessions?to=%2B18144043093&sortField=DateCreated", "to=+1 814 ••• 3093&sortField"),
    ("to=%2b1%20814%20404%203093", "to=+1 814 ••• 3093"),
    ("814/404/3093", "•••93"),
    ("to=814%2F404%2F3093", "to=•••93"),
    ("+1\u00a0814\u00a0404\u00a03093", "+1 814 ••• 3093"),
    # As a repr writes it (asyncio's "exception=ValueError('…')"): the no-break spaces escaped.
    ("'+1\\xa0814\\xa0404\\u202f3093'", "'+1 814 ••• 3093'"),
    ("+1%C2%A0814%E2%80%93404%E2%80%933093", "+1 814 ••• 3093"),
])
def test_a_traceback_shows_numbers_masked_in_either_format(quoted: str, shown: str) -> None:
    try:
        raise ValueError(f"failed on {quoted} at 0x7f1234567890, line 1234")
    except ValueError as exc:
        text = OneLineFormatter(TEXT_FORMAT).format(record("failed", exc=exc))
        entry = json.loads(JsonFormatter().format(record("failed", exc=exc)))
    for logged_text in (text, entry["exception"]):
        assert shown in logged_text and "4043093" not in logged_text
        assert "404%20309" not in logged_text and "404-3093" not in logged_text
        assert "0x7f1234567890, line 1234" in logged_text, "nothing but numbers is masked"


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_library_s_own_words_show_numbers_masked(log_format: LogFormat) -> None:
    """A library's record may quote what it was given in its own line, not only in a traceback:
    asyncio's "Task exception was never retrieved" names the task's exception in its message.
    (The bot's own lines are written with numbers masked; a library's are masked as logged.)"""
    async def dial() -> None:
        raise ValueError("dialling +18144043093 failed, and 814/404/3093")

    task = asyncio.create_task(dial())
    await asyncio.wait([task])
    with logged(log_format) as stream:
        asyncio.get_running_loop().default_exception_handler({
            "message": "Task exception was never retrieved", "exception": task.exception(),
            "future": task})
    text = stream.getvalue()
    said = text.splitlines()[0]  # the record's own line
    if log_format == "json":
        [entry] = [json.loads(line) for line in text.splitlines()]
        said, text = entry["message"], entry["message"] + entry["exception"]
    assert said.startswith("Task exception was never retrieved") or (
        ": Task exception was never retrieved" in said)
    assert "exception=ValueError('dialling +1 814 ••• 3093 failed, and •••93')" in said
    assert "4043093" not in text and "404/3093" not in text, text


def test_a_socket_mode_ticket_is_never_logged() -> None:
    """slack_sdk logs a failed websocket handshake at ERROR with the URL it tried, whose `ticket`
    lets whoever holds it open the app's connection until it expires."""
    url = "wss://wss-primary.slack.com/link/?ticket=b7e1c0de-4f2a-9d3e&app_id=A0APP"
    try:
        raise ConnectionError(f"handshake failed for {url}")
    except ConnectionError as exc:
        said = record("Failed to connect (url: %s)", url, exc=exc)
        text = OneLineFormatter(TEXT_FORMAT).format(said)
        entry = json.loads(JsonFormatter().format(said))
    for shown in (text, entry["message"], entry["exception"]):
        assert "b7e1c0de" not in shown and "ticket=•••&app_id=A0APP" in shown, shown


async def test_a_refused_start_up_is_said_in_json_lines_too(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path
) -> None:
    """With LOG_FORMAT=json every line is a JSON object, the one saying why the bot stopped too:
    a collector that reads JSON lines would drop anything else, and with it the only line that
    says what to fix."""
    env = bot_environment("http", slack, evo, policy_path)
    env.update(LOG_FORMAT="json", EVOVOICE_PASSWORD="not-the-password")
    code, out, err = await run_cli([], env, policy_path.parent)
    assert code == 2 and out == "", err
    entries = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    [stopped] = [e for e in entries if e["message"].startswith("callbot cannot start")]
    assert stopped["level"] == "CRITICAL" and "EVOVOICE_PASSWORD" in stopped["message"]
    assert "not-the-password" not in err


@pytest.mark.parametrize("typed", [
    "+1\u00a0814\u00a0404\u00a03093",  # pasted from a web page: no-break spaces
    "+1\u202f814\u202f404\u202f3093",  # narrow no-break spaces (what phones' formatters write)
    "+1 814\u2013404\u20133093",  # en dashes (what editors turn hyphens into)
    "814\u2011404\u20113093",  # non-breaking hyphens
    "\uff0b\uff11 \uff08\uff18\uff11\uff14\uff09\uff14\uff10\uff14\uff0d\uff13\uff10\uff19\uff13",
    "+1 - 814 - 404 - 3093",
    # More marks than a number is written with, which the bot dials all the same: masked too.
    "814---404---3093",
    "+1.814...404...3093",
    "+1 (814) (404) (3093)",
])
async def test_a_bug_quoting_a_number_as_typed_logs_it_masked(
    bot: BotUnderTest, captured: tuple[str, io.StringIO], monkeypatch: pytest.MonkeyPatch,
    typed: str,
) -> None:
    """A number written the way people paste it, quoted by a bug's words, is masked in its
    traceback like one written with plain spaces and hyphens."""
    log_format, stream = captured

    def bug(text: str) -> None:
        raise ValueError(f"cannot read {text}")

    monkeypatch.setattr("bot.listeners.call_command.parse_command", bug)
    ack, _ = await bot.command(f"{typed} escalation")
    assert "(reference " in ack.text
    text = stream.getvalue()
    if log_format == "json":
        text = "\n".join(json.dumps(json.loads(line), ensure_ascii=False)
                         for line in text.splitlines())
    assert "ValueError: cannot read " in text, "the bug is logged"
    plain = re.sub(r"[\s()\-\u2010-\u2015]", "", unicodedata.normalize("NFKC", text))
    assert "4043093" not in plain, text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_library_s_warning_is_a_log_line_of_the_bot_s_own(log_format: LogFormat) -> None:
    """A library's `warnings.warn` (a deprecation, a misuse it noticed) goes through the bot's own
    handler: one line in the chosen format, numbers masked. Printed by Python's own hook, it
    would be raw text a JSON collector drops, with whatever it quotes in full."""
    program = (
        "import warnings\n"
        "from bot.ops.logs import configure_logging\n"
        f"configure_logging('INFO', {log_format!r})\n"
        "warnings.warn('retrying POST /sessions?to=%2B18144043093', UserWarning)\n"
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", program],
                          capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    if log_format == "json":
        entry = json.loads(lines[0])
        assert entry["level"] == "WARNING" and "UserWarning" in entry["message"]
    assert "4043093" not in done.stderr and "retrying POST" in done.stderr
