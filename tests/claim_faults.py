"""A claim whose write commits and whose answer is then lost, as when the connection drops after
COMMIT (bot/storage/claims.py: a caller that names itself is granted it again)."""

from __future__ import annotations

from typing import Any

from bot.storage.claims import Claims


class AnswerLost:
    """`Claims.claim`, except that the first claim of `key` commits and then loses its answer
    (raising as a dropped connection does)."""

    def __init__(self, claims: Claims, *keys: str) -> None:
        self._real = claims.claim
        self._keys = set(keys)
        self.lost: list[str] = []

    async def __call__(self, key: str, **kwargs: Any) -> bool:
        taken = await self._real(key, **kwargs)
        if key in self._keys and key not in self.lost:
            assert taken
            self.lost.append(key)
            raise ConnectionError("connection lost after COMMIT")
        return taken
