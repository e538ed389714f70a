"""Fixtures that run the real bot against loopback stand-ins for Slack and Evo Voice.

`bot_factory(mode=...)` starts `bot.runtime.Runtime` exactly as `python -m bot` does (same settings,
same start-up checks, same servers); `BotUnderTest.command()` then sends `/call` the way Slack does:
a signed HTTP POST to /slack/events in HTTP mode, a `slash_commands` envelope over the websocket in
Socket Mode.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
import textwrap
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.databases import SKIPPED_WITHOUT_POSTGRES, copy_migrated

# Plugins: the database fixtures (`database_url`, `db`...), early bytecode, each `tmp_path`.
pytest_plugins = ["tests.database_fixtures", "tests.bytecode", "tests.tmp_dirs"]

if TYPE_CHECKING:
    # The bot is imported where a fixture or a helper needs it, not here: pytest-xdist's main
    # process imports this file too, runs no test, and starts the workers only afterwards.
    import aiohttp
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.demo.web import Demo
    from bot.runtime import Runtime
    from bot.standins.evovoice import EvoVoiceStandIn
    from bot.standins.slack import SlackStandIn

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
EVO_USER = "bot@example.com"
EVO_PASSWORD = "evo-secret-password"

FLOWS = [
    {"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"},
    {"id": "flow-wake", "name": "Wake Up Call", "accountId": "acct-1"},
    {"id": "flow-daily", "name": "Daily Check", "accountId": "acct-1"},
    {"id": "flow-page", "name": "Pager Duty Page", "accountId": "acct-1"},
]
OWNED = [
    {
        "id": "ep-1",
        "displayName": "Main line",
        "phoneNumber": "+18145550100",
        "accountId": "acct-1",
    },
    {"id": "ep-2", "displayName": "Ops line", "phoneNumber": "+18145550101", "accountId": "acct-1"},
]

POLICY = textwrap.dedent(
    """
    default_region = "US"
    allowed_regions = ["US", "CA"]
    default_caller_id = "+18145550100"

    [roles]
    Manager = ["U0MANAGER", "S0LEADS"]
    SystemAdministrator = ["U0ADMIN"]

    [flows]
    page = "flow-page"

    [policy]                 # generous, so tests that call often don't meet the default limits
    per_user = "1000/10m"
    per_number = "1000/10m"
    per_day = 100000
    """
)
# For tests of something else that dial one number twice in a row: without the "you called this
# number 20 s ago — call again?" question.
POLICY_NO_REPEAT_QUESTION = POLICY + 'repeat_window = "0s"\n'


@pytest.fixture
async def evo() -> AsyncIterator[EvoVoiceStandIn]:
    from bot.standins.evovoice import EvoVoiceStandIn

    standin = EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD)
    standin.flows[:] = [dict(f) for f in FLOWS]
    standin.phone_numbers[:] = [dict(n) for n in OWNED]
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    from bot.standins.slack import SlackStandIn

    standin = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
    standin.usergroups["S0LEADS"] = ["U0LEAD1", "U0LEAD2"]
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def client(slack: SlackStandIn) -> AsyncWebClient:
    """A Web API client with the bot's token, talking to the Slack stand-in (for tests of a
    service without a whole bot: the roster's phone book, say)."""
    from slack_sdk.web.async_client import AsyncWebClient

    return AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url)


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound and never listening, so
    no other process (another test worker's server) can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (new files readable by everyone), whatever the test runner's is: for a
    test of a file that must be readable by its owner only."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    path = tmp_path / "callbot.toml"
    path.write_text(POLICY)
    return path


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built lives as long as the process: frozen, full garbage collections stop
    walking it; with fewer, larger young ones too, their CPU halves (2 % of the tests')."""
    gc.freeze()
    gc.set_threshold(5000, 20, 20)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every test runs on the loop the bot runs on: EVENT_LOOP's default, uvloop, where it is
    installed; `CALLBOT_TEST_EVENT_LOOP=asyncio` runs them all on asyncio's own."""
    from bot.ops.event_loop import loop_factory

    name = "asyncio" if os.environ.get("CALLBOT_TEST_EVENT_LOOP") == "asyncio" else "uvloop"
    return {name: loop_factory(name) or asyncio.new_event_loop}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if SKIPPED_WITHOUT_POSTGRES in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} PostgreSQL tests skipped: set CALLBOT_TEST_POSTGRES_URL "
            "(like postgresql://postgres@127.0.0.1:5432/test) to run them", yellow=True
        )


@pytest.fixture
def no_ambient_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test passes counts: no variables or .env of the machine running the tests
    (`pytestmark = pytest.mark.usefixtures("no_ambient_settings")` in a module of such tests)."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_", "DATABASE_", "LOG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def bot_environment(
    mode: str, slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, port: int = 0,
    database_url: str | None = None,
) -> dict[str, str]:
    """The environment a deployment would set, pointing at the stand-ins."""
    env = {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "EVOVOICE_URL": evo.url,
        "EVOVOICE_USERNAME": EVO_USER,
        "EVOVOICE_PASSWORD": EVO_PASSWORD,
        "CALLBOT_CONFIG": str(policy_path),
        "DATABASE_URL": database_url or f"sqlite:///{policy_path.parent / 'callbot.db'}",
        "PORT": str(port),
        "EVOVOICE_TIMEOUT": "2",
        # Tests poll every 0.05 s (follow_helpers.FAST), far more often than a deployment: under
        # the default budget of 120 requests a minute their polls would wait for tokens in real
        # time. The budget's own tests (test_polling_budget.py, test_evovoice_budget.py) set theirs.
        "EVOVOICE_REQUESTS_PER_MINUTE": "6000",
    }
    if database_url is not None and not database_url.startswith("sqlite:"):
        # Not ./callbot.audit-spool, the PostgreSQL default: each test keeps its own spool.
        env["AUDIT_SPOOL"] = str(policy_path.parent / "callbot.audit-spool")
    if mode == "socket":
        env["SLACK_APP_TOKEN"] = APP_TOKEN
    else:
        env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
    return env


# For a test that meets an unreachable Evo Voice: the client tries a request three times, after
# 0.5 s and 1 s by default (EVOVOICE_RETRY_SECONDS); how long it pauses is no such test's business
# (tests/test_evovoice.py counts the pauses themselves).
QUICK_VOICE_RETRY = {"EVOVOICE_RETRY_SECONDS": "0.01"}



@dataclass
class Ack:
    status: int
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return json.dumps(self.body)


@dataclass
class BotUnderTest:
    runtime: Runtime
    mode: str
    slack: SlackStandIn
    evo: EvoVoiceStandIn
    http: aiohttp.ClientSession

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.port}/slack/events"

    async def command(
        self,
        text: str,
        *,
        user_id: str = "U0MANAGER",
        channel_id: str = "C0OPS",
        response_url: str | None = None,
    ) -> tuple[Ack, str]:
        """Send `/call text` as Slack would; return the ack and the response_url used."""
        from bot.standins.slack import message_problems, slash_command_body, slash_command_payload

        url = response_url or self.slack.response_url()
        # Slack mints a fresh trigger_id for every invocation; it works once, for 3 s.
        trigger_id = self.slack.new_trigger_id()
        fields = dict(
            text=text,
            user_id=user_id,
            channel_id=channel_id,
            response_url=url,
            trigger_id=trigger_id,
        )
        if self.mode == "socket":
            envelope = await self.slack.send_envelope(
                "slash_commands", slash_command_payload(**fields)
            )
            ack = Ack(200, envelope.get("payload") or {})
        else:
            ack = await self.post_signed(slash_command_body(**fields))
        # Slack shows the user an error instead of an ack it can't render.
        refused = message_problems(ack.body)
        assert not refused, f"Slack refuses this ack: {refused}"
        return ack, url

    async def post_signed(self, body: bytes) -> Ack:
        from bot.standins.slack import ack_problems, sign
        from bot.standins.slack.socket_mode import ACK_DEADLINE_SECONDS

        loop = asyncio.get_running_loop()
        sent = loop.time()
        async with self.http.post(
            self.events_url, data=body, headers=sign(body, SIGNING_SECRET)
        ) as response:
            raw = await response.text()
            try:
                parsed = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                parsed = {"text": raw}
        # Slack gives up on a request unanswered after 3 s: the person sees an error.
        waited = loop.time() - sent
        assert waited <= ACK_DEADLINE_SECONDS, f"Slack gave up after 3 s: acked in {waited:.1f} s"
        # Slack shows the person an error instead of an ack it can't use.
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        if response.status == 200 and "payload" in form:
            try:
                payload = json.loads(form["payload"][0])
            except ValueError:
                payload = None  # a malformed request: its own tests say what it gets
            refused = ack_problems(payload, parsed)
            assert not refused, f"Slack refuses this ack: {refused}"
        return Ack(response.status, parsed)

    async def settle(self) -> None:
        """Wait until the work started by acked requests has finished."""
        assert self.runtime.services is not None
        await self.runtime.services.tasks.wait_idle()


async def until(condition: object, timeout: float = 5.0) -> None:
    """Wait for `condition()` to hold (polling; never asserts how long it took)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


BotFactory = Callable[..., Awaitable[BotUnderTest]]


@pytest.fixture
async def bot_factory(
    slack: SlackStandIn, evo: EvoVoiceStandIn, policy_path: Path, database_url: str,
    migrated_sqlite: Path,
) -> AsyncIterator[BotFactory]:
    started: list[BotUnderTest] = []
    import aiohttp

    from bot.config import load_policy, load_settings
    from bot.runtime import Runtime

    from tests.budget_clock import LeapingClock

    http = aiohttp.ClientSession()
    # Slack's posting limit (about a message a second per channel, short bursts allowed:
    # docs/slack-platform.md) holds for every bot a test starts, on a clock shared by the
    # stand-in's buckets and the bots' posting lanes that leaps wherever a lane waits out a
    # Retry-After: a message over the limit is refused and sent again as with Slack, with no wait
    # in real time. A test about something else that posts far more than Slack would take in one
    # channel at once lifts it (`slack.posting_rate = None`) and says why.
    posting_clock = LeapingClock()
    slack.limit_posting(per_second=1.0, burst=3, clock=posting_clock)

    async def start(
        mode: str = "http", policy: str | None = None,
        slack_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        slack_timeout: float | None = None, **env: str,
    ) -> BotUnderTest:
        """`slack_sleep`: what the bot's Slack client waits out retry pauses with (a test's clock);
        `slack_timeout`: how long it waits for each Web API call (default: the bot's)."""
        if policy is not None:
            policy_path.write_text(policy)
        values = bot_environment(mode, slack, evo, policy_path, database_url=database_url)
        values.update(env)
        settings = load_settings(_env_file=None, **{k.lower(): v for k, v in values.items()})
        copy_migrated(migrated_sqlite, settings.database_url)
        runtime = Runtime(
            settings, load_policy(settings.callbot_config), slack_sleep=slack_sleep,
            **({"slack_timeout": slack_timeout} if slack_timeout is not None else {}),
        )
        await runtime.start()
        if runtime.services is not None:
            lanes = runtime.services.notifier.lanes
            lanes.clock, lanes.sleep = posting_clock, posting_clock.sleep
        bot = BotUnderTest(runtime, mode, slack, evo, http)
        started.append(bot)
        if mode == "socket":
            await slack.wait_connected()
        return bot

    yield start
    for bot in started:
        await bot.runtime.stop(grace=5)
    await http.close()


@pytest.fixture(params=["http", "socket"])
async def bot(request: pytest.FixtureRequest, bot_factory: BotFactory) -> BotUnderTest:
    """The bot, once in HTTP mode and once in Socket Mode."""
    return await bot_factory(request.param)


def policy_with(**rules: object) -> str:
    """The shared test policy with keys of its [policy] section set (TOML values as Python)."""
    text = POLICY
    for key, value in rules.items():
        line = f"{key} = {json.dumps(value, ensure_ascii=False)}"
        pattern = re.compile(rf"^{key} = .*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(line, text, count=1)
        else:
            # a function, not a template: the line may hold backslashes
            text = re.sub(r"^\[policy\].*$", lambda m, line=line: f"{m.group(0)}\n{line}", text,
                          count=1, flags=re.MULTILINE)
    return text


# The Slack app manifest and the schema Slack publishes for it.
ROOT = Path(__file__).parent.parent
SCHEMA_CANDIDATES = [
    ROOT.parent / "shared" / "schemas" / "slack-app-manifest.schema.json",
    ROOT / "tests" / "schemas" / "slack-app-manifest.schema.json",
]


def load_schema() -> dict[str, Any]:
    for path in SCHEMA_CANDIDATES:
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    raise AssertionError(f"schema not found in {SCHEMA_CANDIDATES}")


def manifest() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((ROOT / "manifest.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """`callbot demo`'s world and page, on a free port (tests/test_demo*.py)."""
    from bot.demo.web import Demo

    # Polling as fast as the bots of the other tests (follow_helpers.FAST): a test waits for what
    # the demo does, not for its polls.
    running = Demo(0, tmp_path, poll_seconds=(0.05, 0.2))
    await running.start()
    leap_over_posting_waits(running)
    yield running
    await running.stop()


def leap_over_posting_waits(demo: Demo) -> None:
    """The demo's Slack limits posting as Slack does, in real time; in a test, its bucket and the
    bot's posting lanes share a clock that leaps wherever a lane waits out a Retry-After (as
    `bot_factory`'s do), so no test waits for the limit in real time."""
    from tests.budget_clock import LeapingClock

    assert demo.world.runtime is not None and demo.world.runtime.services is not None
    clock = LeapingClock()
    demo.world.slack.posting_clock = clock
    lanes = demo.world.runtime.services.notifier.lanes
    lanes.clock, lanes.sleep = clock, clock.sleep
