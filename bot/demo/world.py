"""The demo's world: the real bot, unchanged, against the built-in Slack and Evo Voice stand-ins.

`DemoWorld` starts the Slack and Evo Voice stand-ins (the code the tests use), seeds them with a
small workspace (you, a rotation of three, a channel) and an Evo Voice account (flows, a caller
ID), and runs `bot.runtime.Runtime` in Socket Mode against them with the sample policy file. It then
plays the parts a person plays: what Slack sends when someone types `/call`, clicks a button,
submits a form or picks "Escalate to on-call" (Socket Mode envelopes, as Slack sends them), and what
a phone does when it rings (answer, decline, voicemail, acknowledge).

`state()` is what the demo page shows: the channel's messages with their Block Kit, threads,
ephemeral replies, the open form and the phones. Nothing here reaches past the loopback interface.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bot.config import Policy, load_policy, load_settings
from bot.phone import mask
from bot.runtime import Runtime
from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import (
    Message,
    SlackStandIn,
    View,
    block_actions_payload,
    block_suggestion_payload,
    global_shortcut_payload,
    message_shortcut_payload,
    slash_command_payload,
    view_submission_payload,
)

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

YOU = "U0DEMOYOU"
CHANNEL = "C0OPS"
CHANNEL_NAME = "ops"
BOT_TOKEN = "xoxb-demo"
APP_TOKEN = "xapp-demo"
EVO_USER = "demo@callbot.invalid"
EVO_PASSWORD = "demo-password"
MAIN_LINE = "+18145550100"

# Slack user ID -> (handle, real name, the phone in their Slack profile).
PEOPLE: dict[str, tuple[str, str, str]] = {
    YOU: ("you", "You (demo)", "+1 814 404 3095"),
    "U0ALICE": ("alice", "Alice Example", ""),
    "U0BOB": ("bob", "Bob Example", ""),
    "U0CAROL": ("carol", "Carol Example", ""),
}
FLOWS = [
    {"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"},
    {"id": "flow-wake", "name": "Wake Up Call", "accountId": "acct-1"},
    {"id": "flow-status", "name": "Status Update", "accountId": "acct-1"},
]
OWNED = [
    {"id": "ep-1", "displayName": "Main line", "phoneNumber": MAIN_LINE, "accountId": "acct-1"},
    {"id": "ep-2", "displayName": "Ops line", "phoneNumber": "+18145550101", "accountId": "acct-1"},
]
# How a voicemail plays out: it picks up, records for a moment, hangs up.
VOICEMAIL_SECONDS = 3.0
PHONE_ACTIONS = ("answer", "decline", "voicemail", "acknowledge", "hangup")


def sample_policy_path() -> Path:
    return Path(str(resources.files("bot.demo").joinpath("policy.toml")))


class DemoError(Exception):
    """Something the page asked for that can't be done (unknown message, form or phone)."""


@dataclass
class Ephemeral:
    """A message only you see: an ack's text, a response_url reply or chat.postEphemeral."""

    id: int
    channel: str
    text: str
    blocks: list[Any] | None
    thread_ts: str | None = None


@dataclass
class Form:
    """A modal as the page shows it: the view the bot opened, and the errors of the last submit."""

    view_id: str
    errors: dict[str, str] = field(default_factory=dict)


class DemoWorld:
    def __init__(self, data_dir: Path, *, policy_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.policy_path = policy_path or sample_policy_path()
        self.slack = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
        self.evo = EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD)
        self.runtime: Runtime | None = None
        self.policy: Policy | None = None
        self.ephemerals: list[Ephemeral] = []
        self.forms: list[Form] = []
        self.notice: str | None = None
        self._ids = itertools.count(1)
        self._replies_to: dict[str, int] = {}  # response_url -> the ephemeral it may replace
        self._seen_response_posts = 0
        self._seen_post_ephemerals = 0
        self._known_views: set[str] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._first_seen: dict[str, str] = {}  # message ts -> the time the page first showed it

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.policy = load_policy(self.policy_path)
        for user_id, (handle, real_name, phone) in PEOPLE.items():
            self.slack.users[user_id] = {
                "name": handle, "real_name": real_name,
                "profile": {"phone": phone, "display_name": handle, "real_name": real_name},
            }
        self.slack.users[self.slack.bot_user_id] = {"name": "callbot", "real_name": "callbot"}
        self.slack.only_added_users_exist = True
        self.slack.channels[CHANNEL] = {"name": CHANNEL_NAME}
        self.evo.flows[:] = [dict(flow) for flow in FLOWS]
        self.evo.phone_numbers[:] = [dict(number) for number in OWNED]
        await self.slack.start()
        await self.evo.start()
        settings = load_settings(
            _env_file=None,
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
            # Snappier than a real deployment, so a click shows within a second.
            call_poll_seconds=0.5,
            call_poll_max_seconds=1.0,
            audit_hash_key=None,
        )
        self.runtime = Runtime(settings, self.policy)
        await self.runtime.start()
        await self.slack.wait_connected()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
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
                self._tell(f"This demo knows one command: /call (not {command}).")
                return
            await self.command(rest.strip())
            return
        self.slack.add_message(CHANNEL, text, user=YOU, thread_ts=thread_ts)

    async def command(self, text: str) -> None:
        url = self._reply_url()
        payload = slash_command_payload(
            text=text, user_id=YOU, user_name="you", channel_id=CHANNEL, channel_name=CHANNEL_NAME,
            team_id=self.slack.team_id, response_url=url, trigger_id=self.slack.new_trigger_id(),
        )
        ack = await self.slack.send_envelope("slash_commands", payload)
        self._show_ack(ack.get("payload"))

    async def shortcut(self, callback_id: str) -> None:
        payload = global_shortcut_payload(
            callback_id=callback_id, user_id=YOU, user_name="you", team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(),
        )
        await self.slack.send_envelope("interactive", payload)

    async def escalate(self, channel: str, ts: str) -> None:
        """"Escalate to on-call" from a message's ⋮ menu."""
        message = self._message(channel, ts)
        payload = message_shortcut_payload(
            callback_id="escalate_message", channel_id=channel, message_ts=ts,
            message_text=message.text or "", message_user=message.user or YOU,
            thread_ts=message.thread_ts, response_url=self._reply_url(), user_id=YOU,
            user_name="you", channel_name=CHANNEL_NAME, team_id=self.slack.team_id,
            trigger_id=self.slack.new_trigger_id(),
        )
        await self.slack.send_envelope("interactive", payload)

    async def click(self, where: JSON, action: JSON) -> None:
        """A button or a menu choice, on a message, an ephemeral message or a form."""
        url = self._reply_url()
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
            view = self._view(str(where["view_id"]))
            payload = block_actions_payload(view=view.view, extra_action=extra, **common)
        elif where.get("ephemeral_id") is not None:
            ephemeral = self._ephemeral(int(where["ephemeral_id"]))
            self._replies_to[url] = ephemeral.id
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
            message = self._message(channel, ts).to_api(self.slack.team_id)
            payload = block_actions_payload(
                channel_id=channel, message_ts=ts, message=message, response_url=url,
                extra_action=extra, **common,
            )
        await self.slack.send_envelope("interactive", payload)

    async def suggest(self, view_id: str, block_id: str, action_id: str, value: str) -> list[JSON]:
        """The options an external select offers for what was typed (Slack asks the app)."""
        view = self._view(view_id)
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
        form = self._form(view_id)
        view = self._view(view_id)
        response_urls = []
        for block_id, actions in values.items():
            for action_id, value in actions.items():
                channel = value.get("selected_conversation")
                if value.get("type") == "conversations_select" and channel:
                    response_urls.append({"block_id": block_id, "action_id": action_id,
                                          "channel_id": channel,
                                          "response_url": self._reply_url()})
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
        self.forms = [f for f in self.forms if f.view_id != view_id]

    async def form_opened(self, timeout: float = 5.0) -> Form:
        """The form the bot opens (it may open it after acking the click that asked for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._collect()
            if self.forms:
                return self.forms[-1]
            if loop.time() > deadline:
                raise DemoError("the bot opened no form")
            await asyncio.sleep(0.02)

    def close(self, view_id: str) -> None:
        self.forms = [f for f in self.forms if f.view_id != view_id]

    def dismiss(self, ephemeral_id: int) -> None:
        self.ephemerals = [e for e in self.ephemerals if e.id != ephemeral_id]

    def phone(self, session_id: str, action: str) -> None:
        """What the person whose phone rings does."""
        if action not in PHONE_ACTIONS:
            raise DemoError(f"a phone can't {action!r}")
        session = self.evo.sessions.get(session_id)
        if session is None or session.get("ended"):
            raise DemoError("that call is over")
        person = self._person_of(str(session.get("toAddress", "")))
        connected = session.get("callState") == "Connected"
        if action == "answer":
            self.evo.set_session_state(session_id, callState="Connected", answeredByName=person)
        elif action == "acknowledge":
            # A flow that asks "press 1 to acknowledge" reports it in the session's outcome.
            self.evo.set_session_state(session_id, callState="Connected", answeredByName=person,
                                       outcome="Acknowledged")
        elif action == "voicemail":
            self.evo.set_session_state(session_id, callState="Connected",
                                       answeredByName=f"Voicemail of {person}")
            loop = asyncio.get_running_loop()
            timer = loop.call_later(VOICEMAIL_SECONDS, self._end, session_id, "Voicemail")
            self._timers.add(timer)
        elif action == "decline":
            self._end(session_id, "Completed" if connected else "Declined")
        else:
            self._end(session_id, "Completed" if connected else "Declined")

    def _end(self, session_id: str, outcome: str) -> None:
        session = self.evo.sessions.get(session_id)
        if session is None or session.get("ended"):
            return
        fields: JSON = {"ended": True, "callState": "Disconnected",
                        "dateCompleted": _now_iso()}
        if not session.get("outcome"):
            fields["outcome"] = outcome
        self.evo.set_session_state(session_id, **fields)

    # ------------------------------------------------------------------------ what is shown

    def state(self) -> JSON:
        self._collect()
        names = {uid: person[0] for uid, person in PEOPLE.items()}
        names[self.slack.bot_user_id] = "callbot"
        top = self.slack.channel_messages(CHANNEL)
        return {
            "you": YOU,
            "channel": {"id": CHANNEL, "name": CHANNEL_NAME},
            "users": names,
            "messages": [self._message_state(m, replies=self.slack.thread(CHANNEL, m.ts))
                         for m in top],
            "direct": self._direct_messages(),
            "ephemerals": [vars(e) for e in self.ephemerals],
            "form": self._form_state(),
            "phones": self._phones(),
            "notice": self.notice,
        }

    def _message_state(self, message: Message, replies: list[Message] | None = None) -> JSON:
        return {
            "channel": message.channel,
            "ts": message.ts,
            "user": message.user,
            "bot": message.bot_id is not None,
            "text": message.text or "",
            "blocks": message.blocks or [],
            "reactions": list(message.reactions),
            "edits": message.edits,
            "time": self._clock(message.ts),
            "replies": [self._message_state(r) for r in replies or []],
        }

    def _clock(self, ts: str) -> str:
        # The stand-in's ts are counters, not times: show when the message first appeared.
        return self._first_seen.setdefault(ts, dt.datetime.now().strftime("%H:%M"))

    def _direct_messages(self) -> list[JSON]:
        mine = self.slack.dm_channel(YOU)
        return [self._message_state(m) for m in self.slack.messages.values()
                if m.channel == mine]

    def _form_state(self) -> JSON | None:
        if not self.forms:
            return None
        form = self.forms[-1]
        view = self.slack.views.get(form.view_id)
        if view is None:
            return None
        return {"view_id": form.view_id, "view": view.view, "version": len(view.versions),
                "errors": form.errors}

    def _phones(self) -> list[JSON]:
        phones = []
        flow_names = {flow["id"]: flow["name"] for flow in FLOWS}
        for session in self.evo.sessions.values():
            number = str(session.get("toAddress") or "")
            ended, state = bool(session.get("ended")), str(session.get("callState") or "")
            phones.append({
                "session_id": session["id"],
                "person": self._person_of(number),
                "number": mask(number) if number else "",
                "flow": flow_names.get(str(session.get("flowId")), ""),
                "state": "ended" if ended else ("connected" if state == "Connected" else "ringing"),
                "outcome": session.get("outcome") or "",
            })
        return phones[::-1]

    def _person_of(self, number: str) -> str:
        assert self.policy is not None
        for user_id, e164 in self.policy.people.items():
            if e164 == number:
                return PEOPLE.get(user_id, (user_id, user_id, ""))[1]
        for _, real_name, phone in PEOPLE.values():
            if phone and "".join(ch for ch in phone if ch.isdigit() or ch == "+") == number:
                return real_name
        return mask(number) if number else "unknown"

    # ------------------------------------------------------------------------------ plumbing

    def _collect(self) -> None:
        """Fold what the bot sent since the last look into the ephemerals and forms."""
        posts = self.slack.response_posts[self._seen_response_posts:]
        self._seen_response_posts += len(posts)
        for post in posts:
            if post.status >= 300 or not isinstance(post.body, dict):
                continue
            self._show_response(post.url, post.body)
        ephemerals = self.slack.ephemerals[self._seen_post_ephemerals:]
        self._seen_post_ephemerals += len(ephemerals)
        for params in ephemerals:
            if params.get("user") == YOU:
                self._add_ephemeral(str(params.get("channel", CHANNEL)), params)
        for view_id, view in self.slack.views.items():
            if view_id not in self._known_views:
                self._known_views.add(view_id)
                if view.user_id in (None, YOU):
                    self.forms.append(Form(view_id))

    def _show_response(self, url: str, body: JSON) -> None:
        original = self._replies_to.get(url)
        if original is not None and body.get("delete_original"):
            self.dismiss(original)
            return
        if original is not None and body.get("replace_original"):
            for ephemeral in self.ephemerals:
                if ephemeral.id == original:
                    ephemeral.text = str(body.get("text") or "")
                    ephemeral.blocks = body.get("blocks")
            return
        if body.get("response_type") == "in_channel":
            self.slack.add_message(CHANNEL, str(body.get("text") or ""),
                                   user=self.slack.bot_user_id, blocks=body.get("blocks"))
            return
        self._add_ephemeral(CHANNEL, body)

    def _show_ack(self, body: Any) -> None:
        if isinstance(body, dict) and (body.get("text") or body.get("blocks")):
            self._add_ephemeral(CHANNEL, body)

    def _add_ephemeral(self, channel: str, body: JSON) -> None:
        self.ephemerals.append(Ephemeral(
            id=next(self._ids), channel=channel, text=str(body.get("text") or ""),
            blocks=body.get("blocks"), thread_ts=body.get("thread_ts"),
        ))
        del self.ephemerals[:-20]

    def _tell(self, text: str) -> None:
        self._add_ephemeral(CHANNEL, {"text": text})

    def _reply_url(self) -> str:
        return self.slack.response_url()

    def _message(self, channel: str, ts: str) -> Message:
        message = self.slack.messages.get((channel, ts))
        if message is None:
            raise DemoError("no such message")
        return message

    def _ephemeral(self, ephemeral_id: int) -> Ephemeral:
        for ephemeral in self.ephemerals:
            if ephemeral.id == ephemeral_id:
                return ephemeral
        raise DemoError("that message is gone")

    def _view(self, view_id: str) -> View:
        view = self.slack.views.get(view_id)
        if view is None:
            raise DemoError("that form is closed")
        return view

    def _form(self, view_id: str) -> Form:
        for form in self.forms:
            if form.view_id == view_id:
                return form
        raise DemoError("that form is closed")


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


