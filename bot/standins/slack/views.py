"""The Slack stand-in's views.* methods: modals opened by a trigger, updated, pushed, published."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bot.standins.slack.core import StandInCore
from bot.standins.slack.limits import (
    _view_problems,
)
from bot.standins.slack.records import (
    ApiCall,
    ApiReply,
    JSONDict,
    View,
    _err,
)


class ViewMethods(StandInCore):
    """views.open, views.update, views.push, views.publish."""

    def _check_trigger(self, trigger_id: Any) -> str | None:
        if not trigger_id or not isinstance(trigger_id, str):
            return "invalid_arguments"
        minted = self._triggers.get(trigger_id)
        if minted is None:
            # Slack knows every trigger_id it handed out: one it never minted is refused, so a
            # test must send a minted one (new_trigger_id) and its expiry and single use apply.
            return "invalid_trigger_id"
        if trigger_id in self._used_triggers:
            return "exchanged_trigger_id"
        if time.monotonic() - minted > self.trigger_ttl:
            return "expired_trigger_id"
        self._used_triggers.add(trigger_id)
        return None

    def _store_view(
        self, posted: JSONDict, *, view_id: str | None, opened_by: str, trigger_id: str | None
    ) -> View:
        if view_id is None:
            view_id = self._new_id("V")
            record = View(
                id=view_id,
                hash="",
                view={},
                trigger_id=trigger_id,
                opened_by=opened_by,
                external_id=posted.get("external_id") or None,
            )
        else:
            record = self.views[view_id]
        record.hash = f"{int(time.time())}.{uuid.uuid4().hex[:8]}"
        record.versions.append(posted)
        if posted.get("external_id"):
            record.external_id = posted["external_id"]
        full: JSONDict = {
            "id": view_id,
            "team_id": self.team_id,
            "type": posted.get("type"),
            "blocks": posted.get("blocks", []),
            "private_metadata": posted.get("private_metadata", ""),
            "callback_id": posted.get("callback_id", ""),
            "state": {"values": {}},
            "hash": record.hash,
            "title": posted.get("title"),
            "clear_on_close": bool(posted.get("clear_on_close", False)),
            "notify_on_close": bool(posted.get("notify_on_close", False)),
            "close": posted.get("close"),
            "submit": posted.get("submit"),
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "external_id": record.external_id or "",
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        record.view = full
        return record

    def _validated_view(self, call: ApiCall) -> JSONDict | ApiReply:
        view = call.params.get("view")
        if not isinstance(view, dict):
            return ApiReply(
                _err(
                    "invalid_arguments",
                    response_metadata={"messages": ["[ERROR] missing required field: view"]},
                )
            )
        problems = _view_problems(view)
        if problems:
            return ApiReply(_err("invalid_arguments", response_metadata={"messages": problems}))
        return view

    def _views_open(self, call: ApiCall) -> JSONDict | ApiReply:
        view = self._validated_view(call)
        if isinstance(view, ApiReply):
            return view
        trigger_id = call.params.get("trigger_id") or call.params.get("interactivity_pointer")
        problem = self._check_trigger(trigger_id) or self._external_id_problem(view)
        if problem:
            return _err(problem)
        record = self._store_view(view, view_id=None, opened_by=call.method, trigger_id=trigger_id)
        self.views[record.id] = record
        return {"ok": True, "view": record.view}

    def _external_id_problem(self, view: JSONDict) -> str | None:
        """A view's `external_id` is "unique for all views on a team", at most 255 characters
        (Slack's views.open and views.update): `duplicate_external_id` for one in use. Which
        Slack checks first, the trigger or the name, its documentation doesn't say: the trigger
        here (a test fails a call for the other order)."""
        external_id = view.get("external_id")
        if not external_id:
            return None
        if not isinstance(external_id, str) or len(external_id) > 255:
            return "invalid_arguments"
        if any(v.external_id == external_id for v in self.views.values()):
            return "duplicate_external_id"
        return None

    def _views_push(self, call: ApiCall) -> JSONDict | ApiReply:
        return self._views_open(call)

    def _views_update(self, call: ApiCall) -> JSONDict | ApiReply:
        view_id = call.params.get("view_id")
        external_id = call.params.get("external_id")
        record: View | None = None
        if view_id:
            record = self.views.get(view_id)
        elif external_id:
            record = next((v for v in self.views.values() if v.external_id == external_id), None)
        else:
            return _err("invalid_arguments")
        if record is None:
            return _err("not_found")
        posted = self._validated_view(call)
        if isinstance(posted, ApiReply):
            return posted
        expected_hash = call.params.get("hash")
        if expected_hash and expected_hash != record.hash:
            return _err("hash_conflict")
        self._store_view(
            posted, view_id=record.id, opened_by=record.opened_by, trigger_id=record.trigger_id
        )
        return {"ok": True, "view": record.view}

    def _views_publish(self, call: ApiCall) -> JSONDict | ApiReply:
        user_id = call.params.get("user_id")
        if not user_id:
            return _err("invalid_arguments")
        posted = self._validated_view(call)
        if isinstance(posted, ApiReply):
            return posted
        existing = self.home_views.get(user_id)
        if existing is None:
            record = self._store_view(posted, view_id=None, opened_by=call.method, trigger_id=None)
            self.views[record.id] = record
            record.user_id = user_id
            self.home_views[user_id] = record
        else:
            record = self._store_view(
                posted, view_id=existing.id, opened_by=call.method, trigger_id=None
            )
        return {"ok": True, "view": record.view}
