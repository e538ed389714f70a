"""What the demo page shows of Slack: the channel with its threads, your direct messages, the
ephemeral messages only you see and the open form, folded in from what the bot sent to the Slack
stand-in since the last look."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import Any

from bot.demo import DemoError
from bot.demo.seed import CHANNEL, CHANNEL_NAME, PEOPLE, YOU
from bot.standins.slack import Message, SlackStandIn, View

JSON = dict[str, Any]


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


class Screen:
    def __init__(self, slack: SlackStandIn) -> None:
        self.slack = slack
        self.ephemerals: list[Ephemeral] = []
        self.forms: list[Form] = []
        self.notice: str | None = None
        self._ids = itertools.count(1)
        self._replies_to: dict[str, int] = {}  # response_url -> the ephemeral it may replace
        self._seen_response_posts = 0
        self._seen_post_ephemerals = 0
        self._known_views: set[str] = set()
        self._first_seen: dict[str, str] = {}  # message ts -> the time the page first showed it

    def state(self, phones: list[JSON]) -> JSON:
        """Everything the page draws (`phones` from bot.demo.phones)."""
        self.collect()
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
            "phones": phones,
            "notice": self.notice,
        }

    def collect(self) -> None:
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

    # ------------------------------------------------------------------- what you act on

    def message(self, channel: str, ts: str) -> Message:
        message = self.slack.messages.get((channel, ts))
        if message is None:
            raise DemoError("no such message")
        return message

    def ephemeral(self, ephemeral_id: int) -> Ephemeral:
        for ephemeral in self.ephemerals:
            if ephemeral.id == ephemeral_id:
                return ephemeral
        raise DemoError("that message is gone")

    def view(self, view_id: str) -> View:
        view = self.slack.views.get(view_id)
        if view is None:
            raise DemoError("that form is closed")
        return view

    def form(self, view_id: str) -> Form:
        for form in self.forms:
            if form.view_id == view_id:
                return form
        raise DemoError("that form is closed")

    def replies_go_to(self, url: str, ephemeral: Ephemeral) -> None:
        """A reply to `url` may replace or delete `ephemeral` (a button clicked on it)."""
        self._replies_to[url] = ephemeral.id

    def show_ack(self, body: Any) -> None:
        if isinstance(body, dict) and (body.get("text") or body.get("blocks")):
            self._add_ephemeral(CHANNEL, body)

    def tell(self, text: str) -> None:
        self._add_ephemeral(CHANNEL, {"text": text})

    def close(self, view_id: str) -> None:
        self.forms = [f for f in self.forms if f.view_id != view_id]

    def dismiss(self, ephemeral_id: int) -> None:
        self.ephemerals = [e for e in self.ephemerals if e.id != ephemeral_id]

    # ---------------------------------------------------------------------------- drawing

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

    def _add_ephemeral(self, channel: str, body: JSON) -> None:
        self.ephemerals.append(Ephemeral(
            id=next(self._ids), channel=channel, text=str(body.get("text") or ""),
            blocks=body.get("blocks"), thread_ts=body.get("thread_ts"),
        ))
        del self.ephemerals[:-20]
