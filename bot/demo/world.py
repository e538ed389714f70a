"""The demo's world: the real bot, unchanged, against the built-in Slack and Evo Voice stand-ins.

`DemoWorld` starts the Slack and Evo Voice stand-ins (the code the tests use), seeds them with a
small workspace (you, a rotation of three, a channel) and an Evo Voice account (flows, a caller
ID), and runs `bot.runtime.Runtime` in Socket Mode against them with the sample policy file. It then
plays the parts a person plays: what Slack sends when someone types `/call`, clicks a button,
submits a form or picks "Escalate to on-call" (Socket Mode envelopes, as Slack sends them), and what
a phone does when it rings (answer, decline, voicemail, acknowledge).

`state()` is what the demo page shows: the channel's messages with their Block Kit, threads,
ephemeral replies, the open form (bot/demo/screen.py) and the phones (bot/demo/phones.py); the
workspace and account are seeded from bot/demo/seed.py. Nothing here reaches past the loopback
interface.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bot.config import Policy, Settings, load_policy
from bot.demo import DemoError
from bot.demo.phones import RING_SECONDS, Phones
from bot.demo.screen import Form, Screen
from bot.demo.seed import (
    APP_TOKEN,
    BOT_TOKEN,
    CHANNEL,
    CHANNEL_NAME,
    EVO_PASSWORD,
    EVO_USER,
    YOU,
    sample_policy_path,
    seed,
)
from bot.runtime import Runtime
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import (
    SlackStandIn,
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    message_shortcut_payload,
    slash_command_payload,
    view_submission_payload,
)

JSON = dict[str, Any]
# How soon a call's state is first checked again, and the most between checks: snappier than a
# real deployment (CALL_POLL_SECONDS, CALL_POLL_MAX_SECONDS), so a click shows within a second.
DEMO_POLL_SECONDS = (0.5, 1.0)

__all__ = ["CHANNEL", "YOU", "DemoError", "DemoWorld", "sample_policy_path"]


class DemoSettings(Settings):
    """The demo's settings are what it passes, nothing else: a shell set up for the real bot
    (EVOVOICE_MODE, LEASE_SECONDS, NAME_FILE variables exported) changes nothing in the demo."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class DemoWorld:
    def __init__(
        self,
        data_dir: Path,
        *,
        policy_path: Path | None = None,
        poll_seconds: tuple[float, float] = DEMO_POLL_SECONDS,
        ring_seconds: float = RING_SECONDS,
    ) -> None:
        self.data_dir = data_dir
        self.poll_seconds = poll_seconds
        self.policy_path = policy_path or sample_policy_path()
        self.slack = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
        # Slack's posting limit, as every test's Slack has it (about a message a second in a
        # channel, a burst of 3): a burst of calls shows their threads as Slack would let them.
        self.slack.limit_posting()
        self.evo = EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD)
        self.runtime: Runtime | None = None
        self.policy: Policy | None = None
        self.screen = Screen(self.slack)
        self.phones = Phones(self.evo, ring_seconds=ring_seconds)

    @property
    def forms(self) -> list[Form]:
        """The forms the bot opened that are still open, the last one on top."""
        return self.screen.forms

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.policy = self.phones.policy = load_policy(self.policy_path)
        seed(self.slack, self.evo)
        await self.slack.start()
        await self.evo.start()
        self.phones.start()
        settings = DemoSettings(
            slack_bot_token=BOT_TOKEN,
            slack_app_token=APP_TOKEN,
            slack_signing_secret=None,
            slack_api_url=self.slack.api_url,
            evovoice_url=self.evo.url,
            evovoice_username=EVO_USER,
            evovoice_password=EVO_PASSWORD,
            evovoice_account_id=None,
            callbot_config=str(self.policy_path),
            database_url=f"sqlite:///{self.data_dir / 'callbot-demo.db'}",
            port=0,
            call_poll_seconds=self.poll_seconds[0],
            call_poll_max_seconds=self.poll_seconds[1],
            audit_hash_key=None,
        )
        # The bot's probes and metrics stay on the loopback too: none of the demo is on the network.
        self.runtime = Runtime(settings, self.policy, http_host="127.0.0.1")
        await self.runtime.start()
        await self.slack.wait_connected()

    async def stop(self) -> None:
        self.phones.stop()
        if self.runtime is not None:
            await self.runtime.stop(grace=2)
        await self.evo.stop()
        await self.slack.stop()

    # ------------------------------------------------------------------- what a person does

    async def say(self, text: str, thread_ts: str | None = None) -> None:
        """Type into the composer: `/call …` is the command, anything else a message."""
        text = text.strip()
        if not text:
            return
        if text.startswith("/"):
            command, _, rest = text.partition(" ")
            if command != "/call":
                self.screen.tell(f"This demo knows one command: /call (not {command}).")
                return
            await self.command(rest.strip())
            return
        self.slack.add_message(CHANNEL, text, user=YOU, thread_ts=thread_ts)

    async def command(self, text: str) -> None:
        url = self.slack.response_url()
        payload = slash_command_payload(
            text=text, user_id=YOU, user_name="you", channel_id=CHANNEL, channel_name=CHANNEL_NAME,
            team_id=self.slack.team_id, response_url=url, trigger_id=self.slack.new_trigger_id(),
        )
        ack = await self.slack.send_envelope("slash_commands", payload)
        self.screen.show_ack(ack.get("payload"))

    async def shortcut(self, callback_id: str) -> None:
        payload = global_shortcut_payload(
            callback_id=callback_id, user_id=YOU, user_name="you", team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(),
        )
        await self.slack.send_envelope("interactive", payload)

    async def escalate(self, channel: str, ts: str) -> None:
        """"Escalate to on-call" from a message's ⋮ menu."""
        message = self.screen.message(channel, ts)
        payload = message_shortcut_payload(
            callback_id="escalate_message", channel_id=channel, message_ts=ts,
            message_text=message.text or "", message_user=message.user or YOU,
            thread_ts=message.thread_ts, response_url=self.slack.response_url(), user_id=YOU,
            user_name="you", channel_name=CHANNEL_NAME, team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(),
        )
        await self.slack.send_envelope("interactive", payload)

    async def click(self, where: JSON, action: JSON) -> None:
        """A button or a menu choice, on a message, an ephemeral message or a form."""
        url = self.slack.response_url()
        common: JSON = dict(
            action_id=str(action.get("action_id", "")), block_id=str(action.get("block_id", "")),
            value=action.get("value"), action_type=str(action.get("type", "button")),
            user_id=YOU, user_name="you", team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(), channel_name=CHANNEL_NAME,
        )
        extra: JSON = {"action_ts": f"{dt.datetime.now(dt.UTC).timestamp():.6f}"}
        if "selected_option" in action:
            extra["selected_option"] = action["selected_option"]
        if where.get("view_id"):
            view = self.screen.view(str(where["view_id"]))
            payload = block_actions_payload(view=view.view, extra_action=extra, **common)
        elif where.get("ephemeral_id") is not None:
            ephemeral = self.screen.ephemeral(int(where["ephemeral_id"]))
            self.screen.replies_go_to(url, ephemeral)
            message = {"type": "message", "ts": "", "text": ephemeral.text,
                       "blocks": ephemeral.blocks or []}
            payload = block_actions_payload(
                channel_id=ephemeral.channel, message=message, response_url=url,
                extra_action=extra, **common,
            )
            payload["container"]["is_ephemeral"] = True
            payload.pop("message", None)  # Slack sends no message for an ephemeral one
        else:
            channel, ts = str(where.get("channel")), str(where.get("ts"))
            message = self.screen.message(channel, ts).to_api(self.slack.team_id)
            payload = block_actions_payload(
                channel_id=channel, message_ts=ts, message=message, response_url=url,
                extra_action=extra, **common,
            )
        await self.slack.send_envelope("interactive", payload)

    async def suggest(self, view_id: str, block_id: str, action_id: str, value: str) -> list[JSON]:
        """The options an external select offers for what was typed (Slack asks the app)."""
        view = self.screen.view(view_id)
        payload = block_suggestion_payload(
            action_id=action_id, block_id=block_id, value=value, view=view.view, user_id=YOU,
            user_name="you", team_id=self.slack.team_id,
        )
        ack = await self.slack.send_envelope("interactive", payload)
        answer = ack.get("payload") or {}
        options = list(answer.get("options") or [])
        for group in answer.get("option_groups") or []:
            options += group.get("options") or []
        return options

    async def submit(self, view_id: str, values: dict[str, dict[str, JSON]]) -> None:
        form = self.screen.form(view_id)
        view = self.screen.view(view_id)
        response_urls = []
        for block_id, actions in values.items():
            for action_id, value in actions.items():
                channel = value.get("selected_conversation")
                if value.get("type") == "conversations_select" and channel:
                    response_urls.append({"block_id": block_id, "action_id": action_id,
                                          "channel_id": channel,
                                          "response_url": self.slack.response_url()})
        payload = view_submission_payload(
            callback_id=str(view.view.get("callback_id", "")), values=values,
            private_metadata=str(view.view.get("private_metadata", "")), view=view.view,
            view_id=view_id, user_id=YOU, user_name="you", team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(), response_urls=response_urls,
        )
        ack = await self.slack.send_envelope("interactive", payload)
        answer = ack.get("payload") or {}
        if answer.get("response_action") == "errors":
            form.errors = {str(k): str(v) for k, v in (answer.get("errors") or {}).items()}
            return
        # No response_action (or "clear"): Slack closes the form.
        self.screen.close(view_id)

    async def form_opened(self, timeout: float = 5.0) -> Form:
        """The form the bot opens (it may open it after acking the click that asked for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.screen.collect()
            if self.screen.forms:
                return self.screen.forms[-1]
            if loop.time() > deadline:
                raise DemoError("the bot opened no form")
            await asyncio.sleep(0.02)

    def close(self, view_id: str) -> None:
        self.screen.close(view_id)

    def dismiss(self, ephemeral_id: int) -> None:
        self.screen.dismiss(ephemeral_id)

    def phone(self, session_id: str, action: str) -> None:
        """What the person whose phone rings does."""
        self.phones.act(session_id, action)

    def state(self) -> JSON:
        """What the demo page shows."""
        return self.screen.state(self.phones.shown())
