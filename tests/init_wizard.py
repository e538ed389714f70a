"""`callbot init` on a pseudo-terminal, for the tests that drive it as a person would
(tests/test_init.py, tests/test_init_answers.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

from bot.standins.slack import SlackStandIn
from tests.processes import with_one_ca_certificate

TIMEOUT = 30


def clean_environment(**extra: str) -> dict[str, str]:
    env = with_one_ca_certificate({
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "EVOVOICE_", "CALLBOT_", "DATABASE_", "PORT"))
    })
    env.update(extra)
    return env


async def answer(child: pexpect.spawn, prompt: str, reply: str) -> None:
    await child.expect(prompt, timeout=TIMEOUT, async_=True)
    child.sendline(reply)


def spawn(folder: Path, env: dict[str, str]) -> pexpect.spawn:
    """`callbot init` in `folder` on a pseudo-terminal. Without pexpect's 50 ms sleep before each
    send (time.sleep, the whole event loop stopped with it): every answer here is sent once its
    prompt has been read, after `input` or `getpass` (which turns the echo off before writing the
    prompt) has it."""
    child = pexpect.spawn(sys.executable, ["-m", "bot", "init"], cwd=str(folder), env=env,
                          encoding="utf-8", timeout=TIMEOUT)
    child.delaybeforesend = None
    # Nor its 0.1 s sleep in close() (time.sleep too) "to give the kernel time" before it asks
    # whether the child has exited: the tests close it once they have read its EOF, when it has
    # exited or is exiting; if it is still running, close() ends it as before.
    child.ptyproc.delayafterclose = 0
    return child


def spawn_init(folder: Path, slack: SlackStandIn) -> pexpect.spawn:
    return spawn(folder, clean_environment(SLACK_API_URL=slack.api_url))
