"""manifest.yml validates against Slack's official schema and agrees with the code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bot.listeners.call_command import CALL_COMMAND

ROOT = Path(__file__).parent.parent
SCHEMA_CANDIDATES = [
    ROOT.parent / "shared" / "schemas" / "slack-app-manifest.schema.json",
    ROOT / "tests" / "schemas" / "slack-app-manifest.schema.json",
]


def load_schema() -> dict[str, Any]:
    for path in SCHEMA_CANDIDATES:
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    raise AssertionError(f"schema not found in {SCHEMA_CANDIDATES}")


def manifest() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())  # type: ignore[no-any-return]


def test_manifest_validates_against_slacks_schema() -> None:
    jsonschema.validate(manifest(), load_schema())


def test_schema_catches_a_typo() -> None:
    broken = manifest()
    broken["features"]["slash_commands"][0]["shouldescape"] = False
    try:
        jsonschema.validate(broken, load_schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("the schema should refuse an unknown key")


def test_manifest_declares_what_the_code_uses() -> None:
    data = manifest()
    commands = [c["command"] for c in data["features"]["slash_commands"]]
    assert commands == [CALL_COMMAND]
    scopes = set(data["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "usergroups:read"} <= scopes
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["settings"]["interactivity"]["is_enabled"] is True
