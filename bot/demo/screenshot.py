"""`python -m bot.demo.screenshot [FILE]`: the README's picture of the demo page, taken anew.

Sets a scene through the demo's own world (a call answered and followed, a message escalated to
the on-call person, whose phone rings), then photographs the page in headless chromium. Needs
Playwright and Debian's chromium (`pip install -e '.[test]'`, `apt-get install chromium`).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bot.demo.web import Demo, drop_proxy_settings

DEFAULT_FILE = Path("docs/demo.png")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
T = TypeVar("T")


async def set_scene(demo: Demo) -> None:
    world = demo.world

    def phones(state: str) -> list[dict[str, Any]]:
        return [p for p in world.state()["phones"] if p["state"] == state]

    await world.command("+1 814 404 3093 wake-up-call")
    [ringing] = await _until(lambda: phones("ringing"))
    world.phone(ringing["session_id"], "answer")
    await _until(lambda: any("Connected" in str(m.text) for m in world.slack.messages.values()))
    await world.say("db primary is down: checkout returns 500s")
    [message] = [m for m in world.slack.channel_messages("C0OPS") if m.user == "U0DEMOYOU"]
    await world.escalate(message.channel, message.ts)
    form = await world.form_opened()
    view = world.slack.views[form.view_id].view
    await world.submit(form.view_id, _prefilled(view))
    await _until(lambda: phones("ringing"))


async def _until(check: Callable[[], T], timeout: float = 15.0) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        if loop.time() > deadline:
            raise TimeoutError("the demo did not get there")
        await asyncio.sleep(0.05)
    return result


def _prefilled(view: dict[str, object]) -> dict[str, dict[str, dict[str, object]]]:
    values: dict[str, dict[str, dict[str, object]]] = {}
    for block in view.get("blocks") or []:  # type: ignore[attr-defined]
        element = block.get("element") if block.get("type") == "input" else None
        if element:
            values[block["block_id"]] = {element["action_id"]: {
                "type": element["type"], "value": element.get("initial_value")}}
    return values


def chromium_path() -> str:
    """Debian's chromium (Playwright is told to use it; it never downloads a browser)."""
    return shutil.which("chromium") or "/usr/bin/chromium"


async def take(path: Path) -> None:
    from playwright.async_api import async_playwright

    chromium = chromium_path()
    with tempfile.TemporaryDirectory(prefix="callbot-demo-") as data_dir:
        demo = Demo(0, Path(data_dir))
        await demo.start()
        try:
            await set_scene(demo)
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=chromium,
                                                           args=CHROMIUM_FLAGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 800})
                await page.goto(demo.url)
                await page.wait_for_selector("body[data-ready='1']")
                await page.wait_for_selector(".phone.ringing")
                path.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(path))
                await browser.close()
        finally:
            await demo.stop()


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DEFAULT_FILE
    drop_proxy_settings()
    asyncio.run(take(path))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
