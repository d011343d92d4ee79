"""Display text of the metadata fields an importer reads (titles, category names): :func:`clean_text`.

Scraped metadata carries HTML tags and entities (some escaped twice), stray control characters and
runs of whitespace; the catalog keeps the text a person would see. Item ids are never cleaned.
"""
from __future__ import annotations

import html
import re

# A tag starts with a letter, "/" or "!" right after "<" ("size < 5" is text, not a tag).
_TAG = re.compile(r"<!--.*?(?:-->|$)|<[A-Za-z/!][^<>]*>", re.S)
_NEEDS_CLEANING = re.compile(r"[&<]|\s\s|[^\S ]|^\s|\s$|[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Display text of a metadata field: HTML tags stripped, entities unescaped, whitespace collapsed.

    Tags are stripped before unescaping, so an escaped ``&lt;b&gt;`` stays visible text;
    doubly escaped entities (``&amp;quot;``, common in scraped metadata) are unescaped twice.
    Text that needs none of this is returned as is (the common case costs one regex search).
    """
    if not text or _NEEDS_CLEANING.search(text) is None:
        return text
    out = _TAG.sub(" ", text) if "<" in text else text
    if "&" in out:
        out = html.unescape(out)
        if "&" in out and _ENTITY.search(out):  # escaped twice
            out = html.unescape(out)
    out = _CONTROL.sub("", out)
    return _SPACE.sub(" ", out).strip()
