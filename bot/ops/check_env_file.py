"""`callbot check`: a `${NAME}` in `.env` that python-dotenv replaced with nothing.

python-dotenv, which the bot reads `.env` with, expands `${NAME}` (quoted or not) from the
environment and the lines above it. A password holding `${` (generated ones may) is then read with
a piece missing, and Evo Voice or the database refuses a login that looks right in the file. Only a
reference to a variable set nowhere before it (a line further down is not read yet), with no
`:-default`, is reported: a `${HOME}` meant as one works. The value itself is never shown: the
reference may be part of a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from bot.config.settings import Settings
from bot.ops.findings import Finding, Status

# python-dotenv's own form: ${NAME} or ${NAME:-default}.
_REFERENCE = re.compile(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")


def expands(value: str) -> bool:
    """Whether `.env` would read `value` as something else: it holds a `${…}`, which python-dotenv
    replaces even in quotes, and which nothing in `.env` keeps as written."""
    return _REFERENCE.search(value) is not None


def unset_references(path: Path, environ: Mapping[str, str] | None = None) -> list[Finding]:
    """A ✗ for each setting in `path` whose value names a variable set nowhere."""
    environ = os.environ if environ is None else environ
    if not path.is_file():
        return []
    raw = dotenv_values(path, interpolate=False)
    fields = {name.upper() for name in Settings.model_fields}
    findings = []
    above: set[str] = set()  # python-dotenv expands from the lines above, not those below
    for key, value in raw.items():
        looked_up = above.copy()
        above.add(key)
        if value is None or key.upper() not in fields:
            continue
        if any(m.group("default") is None and m.group("name") not in environ
               and m.group("name") not in looked_up for m in _REFERENCE.finditer(value)):
            findings.append(Finding(
                Status.FAIL, f"Setting {key.upper()}",
                f"{path} holds ${{…}} in its value, naming a variable set nowhere before it (in "
                "the environment or a line above): it is read with nothing in its place",
                f"if the $ is part of the value, set {key.upper()} in the environment or in a "
                f"file named by {key.upper()}_FILE (.env expands ${{…}} even in quotes)"))
    return findings
