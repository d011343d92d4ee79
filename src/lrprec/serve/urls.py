"""URLs of the pages, images and API calls, as the templates and the JSON responses write them."""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode


def _qs(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "", False)})


def item_url(item_id: str) -> str:
    return "/item/" + quote(str(item_id), safe="")


def image_url(item_id: str, size: int | None = None) -> str:
    return "/api/items/" + quote(str(item_id), safe="") + "/image.png" + (f"?size={size}" if size else "")


def heatmap_url(a: str, b: str, side: str, relation: str, user: str | None, rule: str, target: str) -> str:
    return "/api/explain/heatmap.png?" + _qs(a=a, b=b, side=side, relation=relation, user=user, rule=rule, target=target)


def pair_url(a: str, b: str, user: str | None = None, relation: str | None = None, rule: str | None = None, target: str | None = None) -> str:
    return "/pair?" + _qs(a=a, b=b, user=user, relation=relation, rule=rule, target=target)


def bilrp_png_url(a: str, b: str, relation: str, user: str | None, rule: str, grid: int, links: int) -> str:
    return "/api/bilrp.png?" + _qs(a=a, b=b, relation=relation, user=user, rule=rule, grid=grid, links=links)
