"""Paged lists as the stand-in serves them: ``page``/``countPerPage`` (25 by default), ``all=true``
read as the test says (nothing public does), ``accountIds`` filtering."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEFAULT_PAGE_SIZE = 25


def page_of(
    items: list[dict[str, Any]],
    query: Mapping[str, str],
    *,
    max_page_size: int | None,
    all_reading: str,
    page_honoured: bool,
) -> dict[str, Any]:
    """The page ``query`` asks for, as a ServiceStack list answers it."""
    per_page = int(query.get("countPerPage", str(DEFAULT_PAGE_SIZE)))
    page = int(query.get("page", "0")) if page_honoured else 0
    if max_page_size is not None:
        per_page = min(per_page, max_page_size)
    everything = query.get("all", "").lower() == "true" and all_reading != "ignored"
    shown = items[page * per_page : (page + 1) * per_page]
    if everything and all_reading == "every_page":
        shown = items  # every item on every page, yet hasMorePages as if paged
    elif everything and max_page_size is None:
        per_page, page, shown = max(len(items), 1), 0, items
    return {
        "items": shown,
        "totalCount": len(items),
        "totalPages": math.ceil(len(items) / per_page) if per_page > 0 else 0,
        "hasMorePages": (page + 1) * per_page < len(items),
    }


def in_accounts(item: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    wanted = {a for a in query.get("accountIds", "").split(",") if a}
    return not wanted or item.get("accountId") in wanted
