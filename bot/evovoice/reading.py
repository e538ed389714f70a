"""Evo Voice's answers read into the client's models (bot/evovoice/models.py).

An answer of a shape the bot can't read is `MalformedResponse`, except in a list read item by
item (`each=True`): nothing says what types an item's fields take (docs/evovoice-api.md), and one
odd item must not hide the others. One flow with a null name made every flow unreadable (callbot
would not start); one earlier call to a number with an outcome written as an object failed every
lookup by that number, and a call whose POST's answer was lost ended "not found" as it rang.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bot.evovoice.errors import MalformedResponse

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item", bound=BaseModel)
_UNREADABLE = "Evo Voice sent an answer the bot could not read."


class Items(list[_Item]):
    """A list's items; `left_out`: how many could not be read (`each=True`)."""

    left_out = 0


def read_model(model: type[_Item], data: Any, path: str) -> _Item:
    try:
        return model.model_validate(data)
    except ValidationError:
        logger.warning("Evo Voice GET %s: unexpected body shape for %s", path, model.__name__)
        raise MalformedResponse(_UNREADABLE) from None


def read_items(model: type[_Item], data: Any, path: str, *, each: bool = False) -> Items[_Item]:
    """The answer's items; `each`: those of an unexpected shape are left out (and counted), not
    the whole answer. An answer that holds no list of items is MalformedResponse either way."""
    # ServiceStack leaves out null properties, so a missing "items" is an empty page.
    raw = data.get("items") if isinstance(data, dict) else data
    if raw is None and isinstance(data, dict):
        raw = []
    if not isinstance(raw, list):
        logger.warning("Evo Voice GET %s: expected a list of items", path)
        raise MalformedResponse(_UNREADABLE)
    if not each:
        return Items(read_model(model, item, path) for item in raw)
    items: Items[_Item] = Items()
    for item in raw:
        try:
            items.append(model.model_validate(item))
        except ValidationError:
            items.left_out += 1
    if items.left_out:
        logger.warning("Evo Voice GET %s: left out %d item(s) of an unexpected shape", path,
                       items.left_out)
    return items
