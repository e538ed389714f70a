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


def test_a_bad_configuration_is_every_problem_at_once_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"CALLBOT_CONFIG": str(tmp_path / "missing.toml"), "PORT": "http"}
    code, out, err = run_main(["run"], env, tmp_path, monkeypatch, capsys)
    assert code == 2 and out == ""
    assert err.startswith("callbot cannot start; fix the configuration:\n")
    problems = [line for line in err.splitlines() if line.startswith("  ✗ ")]
    assert len(problems) >= 3, err
    for name in ("SLACK_BOT_TOKEN", "PORT", "missing.toml"):
        assert any(name in line for line in problems), (name, err)


def test_migrate_db_refuses_a_target_that_is_no_database_url_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "callbot.db").write_bytes(b"")
    env = {"DATABASE_URL": "sqlite:///./callbot.db"}
    code, out, err = run_main(["migrate-db", "mysql://db/callbot"], env, tmp_path, monkeypatch,
                              capsys)
    assert code == 2 and out == ""
    assert err.startswith("callbot migrate-db: use sqlite:///PATH") and "postgresql://" in err


@pytest.mark.parametrize("port", ["65536", "-1"])
def test_demo_refuses_a_port_that_is_no_port(
    port: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_main(["demo", "--port", port], {}, tmp_path, monkeypatch, capsys)
    assert stopped.value.code == 2
    assert f"callbot demo: {port} is not a port number" in capsys.readouterr().err
