"""`callbot manifest [--http https://host]`: manifest.yml as committed, or derived for HTTP mode;
both validate against Slack's official schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.__main__ import main
from bot.slack.manifest import ManifestError, events_url, http_mode, render
from tests.conftest import ROOT, load_schema, manifest
from tests.processes import with_one_ca_certificate

HOST = "https://callbot.example.com"
URL = f"{HOST}/slack/events"


def test_socket_mode_manifest_is_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["manifest"]) == 0
    out = capsys.readouterr().out
    assert out == (ROOT / "manifest.yml").read_text()
    jsonschema.validate(yaml.safe_load(out), load_schema())


def test_http_mode_manifest_validates_and_points_every_url_at_the_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["manifest", "--http", HOST]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    jsonschema.validate(data, load_schema())
    assert data["settings"]["socket_mode_enabled"] is False
    assert [c["url"] for c in data["features"]["slash_commands"]] == [URL]
    assert data["settings"]["interactivity"]["request_url"] == URL
    assert data["settings"]["interactivity"]["message_menu_options_url"] == URL
    # Everything else is as committed.
    committed = manifest()
    assert data["oauth_config"] == committed["oauth_config"]
    assert data["display_information"] == committed["display_information"]
    assert [c["command"] for c in data["features"]["slash_commands"]] == [
        c["command"] for c in committed["features"]["slash_commands"]]


@pytest.mark.parametrize(
    ("given", "expected"),
    [(HOST, URL), (HOST + "/", URL), (URL, URL), ("https://example.com:8443/bots/callbot/",
                                                  "https://example.com:8443/bots/callbot/slack/events")],
)
def test_the_events_url_is_built_once(given: str, expected: str) -> None:
    assert events_url(given) == expected


@pytest.mark.parametrize(
    "given",
    ["http://callbot.example.com", "callbot.example.com", "https://", "ftp://callbot.example.com",
     "https://callbot.example.com/?x=1", "https://user:pw@callbot.example.com",
     "https://callbot.example.com/#frag", "https://callbot example.com"],
)
def test_anything_but_a_plain_https_address_is_refused(given: str) -> None:
    with pytest.raises(ManifestError):
        events_url(given)


def test_the_cli_refuses_http_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["manifest", "--http", "http://callbot.example.com"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--http needs the bot's public https:// address" in captured.err


def test_event_subscriptions_get_the_url_too() -> None:
    """Features that subscribe to events (added later) need the same URL in HTTP mode."""
    data: dict[str, Any] = manifest()
    data["settings"]["event_subscriptions"] = {"bot_events": ["app_home_opened"]}
    derived = http_mode(data, URL)
    assert derived["settings"]["event_subscriptions"]["request_url"] == URL
    jsonschema.validate(derived, load_schema())
    assert "request_url" not in data["settings"]["event_subscriptions"], "input left unchanged"


def test_render_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text((ROOT / "manifest.yml").read_text().replace("name: callbot", "name: pager"))
    assert "name: pager" in render(HOST, path)


def test_python_m_bot_manifest_runs_from_anywhere(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bot", "manifest", "--http", HOST],
                            cwd=tmp_path, env=with_one_ca_certificate(dict(os.environ)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    jsonschema.validate(yaml.safe_load(result.stdout), load_schema())
