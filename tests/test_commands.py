"""`python -m bot`'s exit codes where an operator's script reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.entry import run_main


def test_callbot_check_exits_1_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing set: every setting missing is a ✗ line, and a deployment script must see it fail.
    code, out, _ = run_main(["check"], {}, tmp_path, monkeypatch, capsys)
    assert code == 1
    assert "✗ Setting SLACK_BOT_TOKEN" in out
