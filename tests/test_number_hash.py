"""The number hash key (bot/storage/number_hash.py): AUDIT_HASH_KEY when set, else the database's
own, made once and found again at every start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.storage.database import Database
from bot.storage.number_hash import NumberHasher

NUMBER = "+18145553093"


async def test_the_databases_key_is_kept_across_restarts_and_a_configured_key_wins(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'callbot.db'}"
    hashes = []
    for _ in range(2):
        database = Database(url)
        await database.open()
        try:
            hashes.append((await NumberHasher.open(database))(NUMBER))
            configured = await NumberHasher.open(database, "a key the operator configured")
        finally:
            await database.close()
        assert configured(NUMBER) == NumberHasher(b"a key the operator configured")(NUMBER)
        assert configured(NUMBER) != hashes[-1]
    assert hashes[0] == hashes[1]  # `/call history` finds the numbers of before the restart
    with pytest.raises(ValueError, match="at least 16 bytes"):
        NumberHasher(b"too short")
