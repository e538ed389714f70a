"""The Slack stand-in's Web API: /api/<method> checked and dispatched; chat and reactions."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable

from aiohttp import web

from bot.standins.slack.emoji import STANDARD_EMOJI
from bot.standins.slack.people import PeopleMethods
from bot.standins.slack.records import (
    _JSON_PARAMS,
    WORKSPACE_URL,
    ApiCall,
    ApiReply,
    Cut,
    HandlerResult,
    JSONDict,
    Message,
    _err,
)
from bot.standins.slack.views import ViewMethods


class WebApiMethods(ViewMethods, PeopleMethods):
    """The Web API: each request checked, recorded and dispatched; chat.* and reactions.* here."""

    def _methods(self) -> dict[str, Callable[[ApiCall], HandlerResult]]:
        return {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "users.lookupByEmail": self._users_lookup_by_email,
            "users.profile.get": self._users_profile_get,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "conversations.replies": self._conversations_replies,
        }

    # ---------------------------------------------------------------- Web API: server side

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        method = request.match_info["method"]
        params: JSONDict = dict(request.query)
        ctype = request.content_type
        bad_body: str | None = None
        if request.method == "POST" and request.body_exists:
            if ctype == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    bad_body = "invalid_json"
                else:
                    if isinstance(body, dict):
                        params.update(body)
                    else:
                        bad_body = "invalid_json"
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        params[key] = value.file.read()
                    else:
                        params[key] = value
            else:
                text = await request.text()
                params.update(dict(urllib.parse.parse_qsl(text, keep_blank_values=True)))
        token: str | None = None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip() or None
        param_token = params.pop("token", None)
        if token is None and isinstance(param_token, str) and param_token:
            token = param_token
        for key in _JSON_PARAMS:
            encoded = params.get(key)
            if isinstance(encoded, str) and encoded[:1] in ("[", "{"):
                try:
                    params[key] = json.loads(encoded)
                except ValueError:
                    pass

        call = ApiCall(
            method=method,
            params=params,
            token=token,
            time=received,
            http_method=request.method,
            content_type=ctype,
        )
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        gates = self._gates.get(method, [])
        for gate in gates:
            if not gate.after:
                await gate._pass(call)
        if bad_body is not None:
            reply = ApiReply(_err(bad_body))
        else:
            reply = await self._dispatch(call)
        for gate in gates:
            if gate.after:
                await gate._pass(call)
        call.status = reply.status
        call.response = reply.body
        call.answered = time.monotonic()
        self.calls.append(call)
        self._notify()
        if any(cut.takes(call) for cut in self._cuts.get(method, [])) and request.transport:
            request.transport.abort()  # carried out, and the connection dropped before the answer
        headers = dict(reply.headers)
        if token == self.bot_token and bad_body is None and self.bot_scopes is not None:
            headers.setdefault("x-oauth-scopes", ",".join(self.bot_scopes))
        return web.json_response(reply.body, status=reply.status, headers=headers)

    async def _dispatch(self, call: ApiCall) -> ApiReply:
        method = call.method
        if method not in self._defaults and method not in self._handlers:
            return ApiReply(_err("unknown_method", req_method=method))
        auth_error = self._check_token(method, call.token)
        if auth_error is not None:
            return ApiReply(_err(auth_error))
        failures = self._failures.get(method, [])
        for failure in list(failures):
            if failure.when is not None and not failure.when(call):
                continue
            if failure.remaining is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    failures.remove(failure)
            if failure.status == 429:
                self._hold_channel(call, float(failure.headers["Retry-After"]))
            return ApiReply(_err(failure.error), failure.status, dict(failure.headers))
        limited = self._over_posting_limit(call)
        if limited is not None:
            return limited
        handler = self._handlers.get(method)
        if handler is not None:
            result = handler(call)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, ApiReply):
                return result
            if isinstance(result, dict):
                return ApiReply(result)
            if result is not None:
                raise TypeError(
                    f"on({method!r}) handler returned {type(result).__name__}, "
                    "not dict/ApiReply/None"
                )
        default = self._defaults.get(method)
        if default is None:
            return ApiReply(_err("unknown_method", req_method=method))
        result = default(call)
        if isinstance(result, ApiReply):
            return result
        assert result is not None
        return ApiReply(result)

    def _check_token(self, method: str, token: str | None) -> str | None:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            return "not_authed"
        if token == expected:
            return None
        if token in (self.bot_token, self.app_token):
            return "not_allowed_token_type"
        return "invalid_auth"

    def cut(self, method: str, *, times: int | None = 1,
            when: Callable[[ApiCall], bool] | None = None) -> None:
        """Carry out calls to ``method`` (the next ``times`` of those ``when`` is true for;
        ``None``: all) and then drop their connection without an answer, as a network or a proxy
        failing mid-answer does: Slack did what was asked (the message is posted; the call is
        recorded as answered) and the app hears only a closed connection, so it can't know."""
        self._cuts.setdefault(method, []).append(Cut(when, times))

    def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message (a workspace's admins may delete the bot's too): it is gone
        as after ``chat.delete``, and an edit of it is refused ``message_not_found``."""
        self.deleted_messages.append(self.messages.pop((channel, ts)))
        self._notify()

    # ---- default method implementations (each returns the JSON body or an ApiReply)

    def _api_test(self, call: ApiCall) -> JSONDict:
        return {"ok": True, "args": call.params}

    def _auth_test(self, call: ApiCall) -> JSONDict:
        return {
            "ok": True,
            "url": WORKSPACE_URL,
            "team": "Test Team",
            "user": "callbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
            **({"enterprise_id": self.enterprise_id} if self.enterprise_id else {}),
        }

    def _apps_connections_open(self, call: ApiCall) -> JSONDict:
        if self._stopping:
            return _err("service_unavailable")
        ticket = str(uuid.uuid4())  # the URL is temporary: its ticket expires (expire_tickets)
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.ws_url}?ticket={ticket}&app_id={self.app_id}"}

    def _chat_post_message(self, call: ApiCall) -> JSONDict:
        p = call.params
        channel = p.get("channel")
        if not channel or not isinstance(channel, str):
            return _err("channel_not_found")
        problem = self._validate_message_content(p) or self._not_a_member(channel)
        if problem:
            return _err(problem)
        channel = self._dm_channel_if_user(channel)
        ts = self._next_ts()
        thread_ts = p.get("thread_ts") or None
        msg = Message(
            channel=channel,
            ts=ts,
            text=p.get("text"),
            blocks=p.get("blocks"),
            attachments=p.get("attachments"),
            thread_ts=self._thread_root(channel, thread_ts),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            metadata=p.get("metadata"),
            versions=[
                {
                    "text": p.get("text"),
                    "blocks": p.get("blocks"),
                    "attachments": p.get("attachments"),
                }
            ],
            params=dict(p),
        )
        self.messages[(channel, ts)] = msg
        return {"ok": True, "channel": channel, "ts": ts, "message": msg.to_api(self.team_id)}

    def _not_a_member(self, channel: str) -> str | None:
        """Why Slack refuses a post in ``channel`` whose ``channels`` entry says the bot is no
        member: "not_in_channel (public; chat:write.public fixes it) and channel_not_found
        (private channels, DMs between people)" (docs/slack-platform.md)."""
        info = self.channels.get(channel, {})
        if info.get("is_member", True):
            return None
        if info.get("is_private", not channel.startswith("C")):
            return "channel_not_found"
        if self.bot_scopes is not None and "chat:write.public" in self.bot_scopes:
            return None
        return "not_in_channel"

    def _out_of_private(self, channel: str) -> bool:
        """A private channel the bot is no member of (never was, or was removed from mid-call):
        Slack shows the bot nothing of it, its own messages there included, so an edit or a
        reaction is refused as a post is (`channel_not_found`)."""
        return self._not_a_member(channel) == "channel_not_found"

    def _chat_update(self, call: ApiCall) -> JSONDict:
        p = call.params
        channel, ts = p.get("channel"), p.get("ts")
        if not channel or self._out_of_private(channel):
            return _err("channel_not_found")
        msg = self.messages.get((channel, ts or ""))
        if msg is None:
            return _err("message_not_found")
        if msg.bot_id != self.bot_id:
            return _err("cant_update_message")
        problem = self._validate_message_content(p, require_content=False)
        if problem:
            return _err(problem)
        if "text" in p:
            msg.text = p["text"]
        if "blocks" in p:
            msg.blocks = p["blocks"] or None
        if "attachments" in p:
            msg.attachments = p["attachments"] or None
        if "metadata" in p:
            msg.metadata = p["metadata"]
        msg.versions.append(
            {"text": msg.text, "blocks": msg.blocks, "attachments": msg.attachments}
        )
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": msg.text or "",
            "message": msg.to_api(self.team_id),
        }

    def _chat_delete(self, call: ApiCall) -> JSONDict:
        channel, ts = call.params.get("channel", ""), call.params.get("ts", "")
        msg = self.messages.get((channel, ts))
        if msg is None:
            return _err("message_not_found")
        if msg.bot_id != self.bot_id:
            return _err("cant_delete_message")
        del self.messages[(channel, ts)]
        self.deleted_messages.append(msg)
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, call: ApiCall) -> JSONDict:
        p = call.params
        if not p.get("channel"):
            return _err("channel_not_found")
        if not p.get("user"):
            return _err("user_not_in_channel")
        problem = self._validate_message_content(p)
        if problem:
            return _err(problem)
        ts = self._next_ts()
        self.ephemerals.append({**p, "message_ts": ts})
        return {"ok": True, "message_ts": ts}

    def _chat_get_permalink(self, call: ApiCall) -> JSONDict:
        channel, ts = call.params.get("channel", ""), call.params.get("message_ts", "")
        if not channel:
            return _err("channel_not_found")
        msg = self.messages.get((channel, ts))
        if msg is None:
            return _err("message_not_found")
        link = f"{WORKSPACE_URL}archives/{channel}/p{ts.replace('.', '')}"
        if msg.is_reply:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"ok": True, "channel": channel, "permalink": link}

    def _reactions_add(self, call: ApiCall) -> JSONDict:
        p = call.params
        if self.bot_scopes is not None and "reactions:write" not in self.bot_scopes:
            return _err("missing_scope", needed="reactions:write",
                        provided=",".join(self.bot_scopes))
        if self._out_of_private(str(p.get("channel", ""))):
            return _err("channel_not_found")
        msg = self.messages.get((p.get("channel", ""), p.get("timestamp", "")))
        if msg is None:
            return _err("message_not_found")
        name = str(p.get("name", "")).strip(":")
        if name not in STANDARD_EMOJI and name not in self.custom_emoji:
            return _err("invalid_name")
        if name in msg.reactions:
            return _err("already_reacted")
        msg.reactions.append(name)
        return {"ok": True}
