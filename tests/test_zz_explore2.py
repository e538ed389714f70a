from __future__ import annotations

import json
import re

from bot.standins.slack import message_problems
from tests.conftest import BotFactory, POLICY
from tests.escalations import start, open_on_message, submit, escalation_message, page_of, click_stop, wait_for_state
from tests.follow_helpers import FAST

PING = re.compile(r"<!(channel|here|everyone)|<!subteam|<@U0EVIL")
EVIL = "<!channel> <@U0EVIL> *b* _i_ ~s~ `c` & &amp; > < 👍🏽 e\u0301 \u202eRTL\u202c １２３ "


def pings(bot):
    found = []
    for c in bot.slack.calls:
        if not c.method.startswith(("chat.", "views.")):
            continue
        s = json.dumps(c.params, ensure_ascii=False)
        for hit in PING.finditer(s):
            found.append((c.method, s[max(0, hit.start() - 80): hit.end() + 40]))
        if c.response and c.response.get("ok") is False:
            found.append(("REFUSED", c.method, c.response, s[:300]))
    for p in bot.slack.response_posts:
        s = json.dumps(p.body, ensure_ascii=False)
        for hit in PING.finditer(s):
            found.append(("resp", s[max(0, hit.start() - 80): hit.end() + 40]))
        if p.status != 200:
            found.append(("REFUSED resp", p.status, p.answer, s[:300]))
    return found


def roster(n):
    ids = [f"U0P{i:03d}" for i in range(n)]
    return POLICY + f"""
[oncall]
flow = "Escalation"
rotation = {json.dumps(ids)}
timezone = "America/New_York"
""", ids


async def test_explore_escalation(bot_factory: BotFactory) -> None:
    pol, ids = roster(60)
    bot, clock = await start(bot_factory, "http", policy=pol)
    for i, uid in enumerate(ids):
        phone = ["+1 900 555 0123 " + EVIL, EVIL * 10, "+1814404%04d" % i, "８１４４０４３０９３"][i % 4]
        bot.slack.users[uid] = {"id": uid, "name": EVIL + "x" * 80, "real_name": EVIL,
                                "profile": {"phone": phone, "display_name": EVIL, "real_name": EVIL}}
    view, message = await open_on_message(bot, text=EVIL * 20 + " <https://evil.example|click> <!here>")
    print("FORM", json.dumps(view.versions[-1], ensure_ascii=False)[:3000])
    await submit(bot, view, reason=(EVIL * 20)[:500])
    card = await escalation_message(bot)
    await bot.evo.wait_for_posts(1)
    await click_stop(bot, card, user_id="U0ADMIN")
    await bot.settle()
    card = bot.slack.messages[(card.channel, card.ts)]
    print("CARD", json.dumps(card.versions[-1], ensure_ascii=False)[:6000])
    for p in pings(bot):
        print("PING", p)
