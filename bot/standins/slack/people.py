"""The Slack stand-in's users, user groups and conversations: who exists, where, and what was said
in a thread."""

from __future__ import annotations

from bot.standins.slack.core import StandInCore
from bot.standins.slack.records import (
    ApiCall,
    JSONDict,
    _err,
)

EMAIL_SCOPE = "users:read.email"
# conversations.replies (Slack's documentation): each kind of conversation needs its history scope.
HISTORY_SCOPES = {"public": "channels:history", "private": "groups:history", "im": "im:history"}
REPLIES_LIMIT = 1000  # Slack's most (and default) per page


class PeopleMethods(StandInCore):
    """users.*, usergroups.users.list, conversations.*."""

    def _usergroups_users_list(self, call: ApiCall) -> JSONDict:
        group = call.params.get("usergroup")
        if not group:
            return _err("invalid_arguments")
        if group not in self.usergroups:
            return _err("no_such_subteam")
        return {"ok": True, "users": list(self.usergroups[group])}

    def _user(self, user_id: str) -> JSONDict:
        given = self.users.get(user_id, {})
        name = given.get("name", user_id.lower())
        real_name = given.get("real_name", f"User {user_id}")
        profile: JSONDict = {
            "real_name": real_name,
            "display_name": name,
            "real_name_normalized": real_name,
            "display_name_normalized": name,
            "email": f"{name}@example.com",
            "phone": "",
            "title": "",
            "team": self.team_id,
        }
        profile.update(given.get("profile", {}))
        user: JSONDict = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": "America/New_York",
            "tz_label": "Eastern Standard Time",
            "tz_offset": -18000,
            "is_admin": False,
            "is_owner": False,
            "is_bot": user_id == self.bot_user_id,
            "is_app_user": False,
            "updated": 1700000000,
        }
        if self.enterprise_id:  # Slack's user object in an Enterprise Grid organisation
            user["enterprise_user"] = {
                "id": user_id, "enterprise_id": self.enterprise_id, "enterprise_name": "Test Org",
                "is_admin": False, "is_owner": False, "teams": [self.team_id],
            }
        user.update({k: v for k, v in given.items() if k != "profile"})
        user["profile"] = profile
        return user

    def _user_exists(self, user_id: str) -> bool:
        if not self.only_added_users_exist:
            return True
        return user_id in self.users or user_id == self.bot_user_id

    def _users_info(self, call: ApiCall) -> JSONDict:
        user_id = call.params.get("user")
        if not user_id or not self._user_exists(str(user_id)):
            return _err("user_not_found")
        return {"ok": True, "user": self._user(user_id)}

    def _users_list(self, call: ApiCall) -> JSONDict:
        # Paginated like Slack's: `limit` per page, an opaque cursor, "" once there is no more.
        everyone = [self._user(uid) for uid in dict.fromkeys([*self.users, self.bot_user_id])]
        try:
            limit = int(call.params.get("limit") or 0) or len(everyone) or 1
            start = int(str(call.params.get("cursor") or "0").removeprefix("dXNlcjo") or 0)
        except ValueError:
            return _err("invalid_cursor")
        page = everyone[start:start + limit]
        after = start + limit
        cursor = f"dXNlcjo{after}" if after < len(everyone) else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": cursor}}

    def _users_lookup_by_email(self, call: ApiCall) -> JSONDict:
        email = str(call.params.get("email") or "").strip().lower()
        if not email:
            return _err("invalid_arguments")
        # Slack's documentation: this method needs users:read.email (callbot's manifest lacks it).
        if self.bot_scopes is not None and EMAIL_SCOPE not in self.bot_scopes:
            return _err("missing_scope", needed=EMAIL_SCOPE,
                        provided=",".join(self.bot_scopes))
        for uid in self.users:
            user = self._user(uid)
            if str(user["profile"].get("email", "")).lower() == email:
                return {"ok": True, "user": user}
        return _err("users_not_found")

    def _users_profile_get(self, call: ApiCall) -> JSONDict:
        user_id = call.params.get("user") or self.bot_user_id
        return {"ok": True, "profile": self._user(user_id)["profile"]}

    def _conversations_info(self, call: ApiCall) -> JSONDict:
        channel = call.params.get("channel")
        if not channel:
            return _err("channel_not_found")
        info: JSONDict = {
            "id": channel,
            "name": channel.lower(),
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": channel.startswith("D"),
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_member": True,
            "created": 1700000000,
            "context_team_id": self.team_id,
        }
        info.update(self.channels.get(channel, {}))
        return {"ok": True, "channel": info}

    def _conversations_open(self, call: ApiCall) -> JSONDict:
        users = str(call.params.get("users", "")).split(",")
        users = [u for u in users if u]
        if not users:
            return _err("users_list_not_supplied")
        return {
            "ok": True,
            "channel": {"id": self.dm_channel(users[0]) if len(users) == 1 else self._new_id("G")},
        }

    def _conversations_replies(self, call: ApiCall) -> JSONDict:
        """A message and its replies, oldest first (the parent first), a page at a time. Message
        metadata is returned only with `include_all_metadata`."""
        channel, ts = call.params.get("channel"), call.params.get("ts")
        if not channel:
            return _err("channel_not_found")
        info = self.channels.get(channel, {})
        kind = ("im" if channel.startswith("D") else
                "private" if info.get("is_private", not channel.startswith("C")) else "public")
        needed = HISTORY_SCOPES[kind]
        if self.bot_scopes is not None and needed not in self.bot_scopes:
            return _err("missing_scope", needed=needed, provided=",".join(self.bot_scopes))
        parent = self.messages.get((channel, str(ts))) if ts else None
        if parent is None:
            return _err("thread_not_found")
        thread = [parent, *self.thread(channel, parent.ts)]
        try:
            start = int(call.params.get("cursor") or 0)
            limit = min(int(call.params.get("limit") or REPLIES_LIMIT), REPLIES_LIMIT)
        except ValueError:
            return _err("invalid_cursor")
        metadata = str(call.params.get("include_all_metadata", "")).lower() in ("1", "true")
        page = []
        for message in thread[start:start + limit]:
            shown = message.to_api(self.team_id)
            if not metadata:
                shown.pop("metadata", None)
            page.append(shown)
        more = start + limit < len(thread)
        return {"ok": True, "messages": page, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}
