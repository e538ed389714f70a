"""`callbot demo` in a real headless browser: place, follow, hang up and escalate a call.

Drives Debian's chromium through Playwright (no browser download: `.ci/run` installs the package).
Outside CI the test is skipped when chromium or Playwright is missing; in CI it must run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.demo.screenshot import CHROMIUM_FLAGS, chromium_path
from bot.demo.web import Demo
from tests.conftest import leap_over_posting_waits

CHROMIUM = chromium_path()
WAIT_MS = 15_000

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # pragma: no cover - CI installs it (see .ci/run)
    async_playwright = None

if (async_playwright is None or not os.path.exists(CHROMIUM)) and not os.environ.get("CI"):
    pytest.skip("needs Playwright and Debian's chromium (.ci/run installs both)",
                allow_module_level=True)


# One chromium for the module (starting Playwright's driver and the browser costs about 1.5 CPU-s),
# a fresh browser context (its own cookies, storage and cache) and demo for each test. Everything
# runs in the module's event loop, where the browser lives.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        await chromium.close()


async def new_context(browser: Any, **options: Any) -> Any:
    """A browser context that asks for reduced motion, as a person may: a ringing phone's pulse,
    redrawn 60 times a second, took a fifth of a core for as long as a phone rang."""
    return await browser.new_context(reduced_motion="reduce", **options)


@pytest_asyncio.fixture(loop_scope="module")
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """tests/conftest.py's `demo` (polling the voice API as fast, posting without waiting), in the
    module's event loop; its page polls every 0.1 s, not 0.5: a test waits for what the demo
    does, not for a poll."""
    running = Demo(0, tmp_path, poll_seconds=(0.05, 0.2), page_poll_seconds=0.1)
    await running.start()
    leap_over_posting_waits(running)
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any, demo: Demo) -> AsyncIterator[Any]:
    context = await new_context(browser, viewport={"width": 1280, "height": 860})
    tab = await context.new_page()
    tab.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    await tab.goto(demo.url)
    await tab.wait_for_selector("body[data-ready='1']")
    yield tab
    await context.close()


# WCAG's contrast ratio of an element's text against the background drawn behind it, the
# opacity of the element and its ancestors up to that background included (4.5 is the least for
# text of its size).
CONTRAST = r"""el => {
  const rgba = s => {
    const v = s.match(/[\d.]+/g).map(Number);
    return v.length === 3 ? [...v, 1] : v;
  };
  const lum = c => c.slice(0, 3).map(v => v / 255)
    .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  let alpha = 1, background = null, behind = [255, 255, 255, 1];
  for (let node = el; node; node = node.parentElement) {
    const style = getComputedStyle(node), colour = rgba(style.backgroundColor);
    if (!background) alpha *= Number(style.opacity);
    if (colour[3] === 1 && background) { behind = colour; break; }
    if (colour[3] === 1) background = colour;
  }
  const seen = c => c.slice(0, 3).map((v, i) => alpha * v + (1 - alpha) * behind[i]);
  const [light, dark] = [lum(seen(rgba(getComputedStyle(el).color))), lum(seen(background))]
    .sort((a, b) => b - a);
  return (light + 0.05) / (dark + 0.05);
}"""


async def say(page: Page, text: str) -> None:
    await page.fill("#composer-input", text)
    await page.press("#composer-input", "Enter")


async def test_place_follow_and_hang_up_a_call(page: Page, demo: Demo) -> None:
    await say(page, "/call +1 814 404 3093 escalation")

    parent = page.locator("#messages > .msg").filter(has_text="is calling +1 814 ••• 3093")
    await expect(parent).to_be_visible()
    thread = parent.locator(".thread")
    await expect(thread).to_contain_text("Ringing")

    alice = page.locator(".phone.ringing").filter(has_text="Alice Example")
    # Still, for a person who asks for reduced motion (the narrow window's test sees it pulse).
    assert await alice.evaluate("p => getComputedStyle(p).animationName") == "none"
    await alice.get_by_role("button", name="Answer").click()
    await expect(thread).to_contain_text("Connected")
    await expect(page.locator(".phone.connected")).to_contain_text("Alice Example")

    await thread.get_by_role("button", name="Hang up").click()
    dialog = page.get_by_role("alertdialog", name="Hang up?")  # named by its title, as a form is
    await expect(dialog).to_contain_text("Hang up?")
    await dialog.get_by_role("button", name="Hang up").click()
    await expect(thread).to_contain_text("Ended")
    ended = page.locator(".phone.ended")
    await expect(ended).to_contain_text("Alice Example")
    # How it ended reads as well as the rest of the page: not faded below WCAG's contrast.
    assert await ended.locator(".status").evaluate(CONTRAST) >= 4.5
    await expect(thread.get_by_role("button", name="Call again")).to_be_visible()
    assert len(demo.world.evo.outgoing_posts) == 1


async def test_a_change_redraws_only_what_changed(page: Page, demo: Demo) -> None:
    """The channel, the replies only you see and the phones are live regions: a screen reader
    reads out what is added or redrawn there. A status edited redraws its message alone; the
    channel redrawn whole at every edit was read out whole, every message again."""
    for part in ("#messages", "#ephemerals", "#phone-list"):
        await expect(page.locator(part)).to_have_attribute("aria-live", "polite")
    await say(page, "the checkout is down")
    await say(page, "/call +1 814 404 3093 escalation")
    call = page.locator("#messages > .msg").filter(has_text="is calling")
    await expect(call.locator(".thread")).to_contain_text("Ringing")
    await page.evaluate("() => document.querySelectorAll('#messages > *, #phone-list > *')"
                        ".forEach(e => { e.dataset.seen = 'before'; })")
    await say(page, "/call help")
    await expect(page.locator("#ephemerals")).to_contain_text("/call")
    [phone] = demo.world.state()["phones"]
    demo.world.phone(phone["session_id"], "answer")
    await expect(call.locator(".thread")).to_contain_text("Connected")
    await expect(page.locator(".phone.connected")).to_be_visible()

    untouched = page.locator("#messages > .msg[data-seen]")
    await expect(untouched).to_have_count(1)
    await expect(untouched).to_contain_text("the checkout is down")
    await expect(page.locator("#phone-list > [data-seen]")).to_have_count(0)  # it was answered


async def test_a_voicemail_reads_as_picked_up_never_as_answered(page: Page, demo: Demo) -> None:
    phones = demo.world.phones
    phones.voicemail_seconds = 60.0  # it records until the bot has seen it pick up (below)
    await say(page, "/call +1 814 404 3093 escalation")
    parent = page.locator("#messages > .msg").filter(has_text="is calling +1 814 ••• 3093")
    thread = parent.locator(".thread")
    await expect(thread).to_contain_text("Ringing")

    alice = page.locator(".phone.ringing").filter(has_text="Alice Example")
    await alice.get_by_role("button", name="Voicemail").click()
    await expect(thread).to_contain_text("Connected (answered by Voicemail of Alice")
    # The recording ends now: a voicemail started afresh, with no time left to record.
    [phone] = demo.world.state()["phones"]
    phones.voicemail_seconds = 0.0
    demo.world.phone(phone["session_id"], "voicemail")
    await expect(thread).to_contain_text("☎️ Ended: Voicemail, answered by Voicemail of Alice")
    await expect(parent.locator(".reactions")).to_have_text("☎️")  # drawn, not ":phone:"
    await expect(parent).to_contain_text("☎️ Picked up by a person or a voicemail (can't tell "
                                         "which).")
    assert "✅" not in await parent.inner_text()


async def test_escalate_a_message_and_acknowledge_the_page(page: Page, demo: Demo) -> None:
    await say(page, "db primary is down")
    message = page.locator("#messages > .msg").filter(has_text="db primary is down")
    await message.hover()
    await message.get_by_role("button", name="More actions").click()
    await message.locator(".menu").get_by_role("button", name="Escalate to on-call").click()

    form = page.locator("#modal-root [role=dialog]")
    await expect(form).to_contain_text("db primary is down")  # the reason, prefilled
    await form.locator("#modal-submit").click()
    await expect(form).to_have_count(0)

    thread = message.locator(".thread")
    await expect(thread).to_contain_text("On-call escalation")
    # Whoever the rotation has on call today: the first phone to ring.
    on_call = page.locator(".phone.ringing").first
    await on_call.get_by_role("button", name="Acknowledge (press 1)").click()
    await expect(thread).to_contain_text("acknowledged on the call")
    assert len(demo.world.evo.outgoing_posts) == 1  # nobody else was called


async def test_the_call_form_shows_errors_under_their_field(page: Page, demo: Demo) -> None:
    await say(page, "/call")
    form = page.locator("#modal-root [role=dialog]")
    await expect(form).to_contain_text("Number to call")
    number = form.locator(".input").filter(has_text="Number to call").locator("input")
    await number.fill("+1 900 555 0123")
    await form.locator("#modal-submit").click()
    await expect(form.locator(".input.has-error .error").first).to_be_visible()
    await expect(form).to_be_visible()
    assert demo.world.evo.outgoing_posts == []

    await form.locator("#modal-close").click()
    await expect(form).to_have_count(0)


async def test_a_refusal_is_shown_only_to_you(page: Page) -> None:
    await say(page, "/call help")
    await expect(page.locator("#ephemerals .ephemeral").first).to_contain_text("/call")
    await expect(page.locator("#ephemerals")).to_contain_text("Only visible to you")


async def test_text_reads_as_slack_shows_it(page: Page, demo: Demo) -> None:
    # The bot escapes &, < and > as Slack asks (&amp;, &lt;, &gt;); Slack shows the characters.
    await say(page, "checkout & payments <down>")
    message = page.locator("#messages > .msg").filter(has_text="checkout")
    await message.hover()
    await message.get_by_role("button", name="More actions").click()
    await message.locator(".menu").get_by_role("button", name="Escalate to on-call").click()
    form = page.locator("#modal-root [role=dialog]")
    await form.locator("#modal-submit").click()
    thread = message.locator(".thread")
    await expect(thread).to_contain_text("Reason: “checkout & payments <down>”")
    assert "&amp;" not in await page.locator("#messages").inner_text()


async def test_a_page_in_your_direct_messages_links_to_its_escalation(
    page: Page, demo: Demo
) -> None:
    await say(page, "/call oncall take")  # you are on call: the escalation pages you first
    await expect(page.locator("#messages")).to_contain_text("is now on call")
    await say(page, "the checkout is down")
    message = page.locator("#messages > .msg").filter(has_text="the checkout is down")
    await message.hover()
    await message.get_by_role("button", name="More actions").click()
    await message.locator(".menu").get_by_role("button", name="Escalate to on-call").click()
    await page.locator("#modal-root [role=dialog] #modal-submit").click()

    paged = page.locator(".msg").filter(has_text="You are being paged")
    await expect(paged.first).to_be_visible()
    await expect(paged.first.get_by_role("link", name="the escalation")).to_be_visible()
    assert "<https://" not in await paged.first.inner_text()


async def test_a_narrow_window_shows_the_channel_and_the_phones_readably(
    browser: Any, demo: Demo
) -> None:
    # As most people's browsers are set: a ringing phone pulses.
    context = await browser.new_context(viewport={"width": 375, "height": 740},
                                        reduced_motion="no-preference")
    try:
        tab = await context.new_page()
        await tab.goto(demo.url)
        await tab.wait_for_selector("body[data-ready='1']")
        await say(tab, "/call +1 814 404 3093 escalation")
        await expect(tab.locator("#messages")).to_contain_text("is calling")
        await expect(tab.locator(".phone.ringing")).to_contain_text("Alice Example")
        # The channel takes the width, not a 75-pixel column beside the phones; nothing is wider
        # than the window.
        channel = await tab.locator("#messages").bounding_box()
        assert channel is not None and channel["width"] >= 300, channel
        widths = await tab.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], widths
        phone = tab.locator(".phone.ringing")
        await phone.scroll_into_view_if_needed()
        box = await phone.bounding_box()
        assert box is not None and box["width"] >= 300, box
        assert await phone.evaluate("p => getComputedStyle(p).animationName") == "ring"
        await phone.get_by_role("button", name="Answer").click()
        await expect(tab.locator(".phone.connected")).to_contain_text("Alice Example")
    finally:
        await context.close()


async def test_a_message_can_be_escalated_with_the_keyboard_alone(page: Page, demo: Demo) -> None:
    await page.focus("#composer-input")
    await page.keyboard.type("the checkout is down")
    await page.keyboard.press("Enter")
    await expect(page.locator("#messages")).to_contain_text("the checkout is down")
    await page.mouse.move(0, 0)  # no hover: only the keyboard shows what is there
    more = page.get_by_role("button", name="More actions")
    for _ in range(10):  # back from the composer, through the channel's messages
        if await more.evaluate("b => b === document.activeElement"):
            break
        await page.keyboard.press("Shift+Tab")
    await expect(more).to_be_focused()
    await expect(more).to_be_visible()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Escalate to on-call").last).to_be_focused()
    await page.keyboard.press("Enter")

    form = page.locator("#modal-root [role=dialog]")
    await expect(form).to_contain_text("the checkout is down")
    # The form takes the focus, as Slack's does: typing goes into it, not behind it.
    await expect(form.locator("textarea, input, select").first).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(form).to_have_count(0)
    assert demo.world.evo.outgoing_posts == []


async def test_a_form_keeps_the_keyboard_and_gives_it_back(page: Page) -> None:
    """As Slack's forms do: the form is named by its title, Tab goes round its fields and buttons
    and never to the page hidden behind it, and once it closes the keyboard is where it was."""
    await say(page, "/call")
    form = page.get_by_role("dialog", name="Place a call")
    await expect(form).to_be_visible()
    inside = "f => f.contains(document.activeElement)"
    for key in ["Tab"] * 7 + ["Shift+Tab"] * 7:  # more than the form has fields and buttons
        await page.keyboard.press(key)
        assert await form.evaluate(inside), key
    await page.keyboard.press("Escape")
    await expect(form).to_have_count(0)
    await expect(page.locator("#composer-input")).to_be_focused()


async def test_the_page_says_when_the_demo_is_not_running(page: Page) -> None:
    """The demo stopped (Ctrl-C) under an open page: the page went on showing phones ringing and
    buttons that did nothing, without a word, and what was typed was lost. It now says the demo
    is not running, keeps what was typed, and carries on once the demo answers again."""
    gone = page.locator("#offline")
    await expect(gone).to_be_hidden()
    await page.route("**/api/**", lambda route: route.abort("connectionrefused"))
    await expect(gone).to_be_visible()
    await expect(gone).to_have_attribute("role", "alert")
    await expect(gone).to_contain_text("not running")
    await say(page, "/call help")
    await expect(page.locator("#composer-input")).to_have_value("/call help")

    await page.unroute("**/api/**")
    await expect(gone).to_be_hidden()
    await page.press("#composer-input", "Enter")
    await expect(page.locator("#ephemerals")).to_contain_text("/call oncall")


async def test_a_channel_named_in_a_message_reads_by_its_name(page: Page) -> None:
    await say(page, "/call")
    form = page.locator("#modal-root [role=dialog]")
    await expect(form).to_contain_text("The confirmation will be posted in #ops.")


async def test_the_page_logs_no_error_in_the_browser_console(browser: Any, demo: Demo) -> None:
    context = await new_context(browser)
    errors: list[str] = []
    try:
        tab = await context.new_page()
        tab.on("console", lambda m: errors.append(f"{m.text} {m.location}")
               if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        await tab.goto(demo.url)
        await tab.wait_for_selector("body[data-ready='1']")
        await say(tab, "/call help")
        await expect(tab.locator("#ephemerals")).to_contain_text("/call")
        for _ in range(2):  # a poll or two, and what they draw
            async with tab.expect_response(lambda r: r.url.endswith("/api/state")):
                pass
    finally:
        await context.close()
    assert errors == []


async def test_replies_only_you_see_never_push_the_composer_off_the_window(page: Page) -> None:
    for _ in range(4):  # quick repeats: each answer stays until dismissed
        await say(page, "/call help")
    await expect(page.locator("#ephemerals .ephemeral")).to_have_count(4)
    composer = await page.locator("#composer").bounding_box()
    assert composer is not None and composer["y"] + composer["height"] <= 860, composer
    messages = await page.locator("#messages").bounding_box()
    assert messages is not None and messages["height"] >= 150, messages
    # The newest reply is in view, the composer still takes what is typed.
    await expect(page.locator("#ephemerals .ephemeral").last).to_be_in_viewport()
    await say(page, "still here")
    await expect(page.locator("#messages")).to_contain_text("still here")


async def test_a_link_to_a_message_stays_in_the_demo(page: Page, demo: Demo) -> None:
    """The stand-in's permalinks name a workspace that exists nowhere (test.slack.com): followed,
    they would leave the machine. The page shows the message instead, as Slack does."""
    left: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(demo.url) else left.append(r.url))
    await say(page, "/call oncall take")
    await expect(page.locator("#messages")).to_contain_text("is now on call")
    await say(page, "the checkout is down")
    message = page.locator("#messages > .msg").filter(has_text="the checkout is down")
    await message.hover()
    await message.get_by_role("button", name="More actions").click()
    await message.locator(".menu").get_by_role("button", name="Escalate to on-call").click()
    await page.locator("#modal-root [role=dialog] #modal-submit").click()

    link = page.locator(".msg").filter(has_text="You are being paged").first.get_by_role(
        "link", name="the escalation")
    await expect(link).to_be_visible()
    assert (await link.evaluate("a => a.href")).startswith(demo.url)
    await page.locator("#messages").evaluate("box => { box.scrollTop = box.scrollHeight; }")
    await link.click()
    await expect(message.locator(".thread .msg").first).to_be_in_viewport()
    assert left == []
