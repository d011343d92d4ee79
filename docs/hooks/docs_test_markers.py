"""MkDocs hook: the docs test's markers above a code block become a visible note on the page.

``tests/test_docs.py`` runs every code block of the tutorials; a block it leaves out (or starts
in the background) carries ``<!-- docs-test: skip — reason -->`` on the line above its fence.
Readers see the reason too, so nothing is skipped silently.
"""
from __future__ import annotations

import re

MARKER = re.compile(r"^<!-- docs-test: (skip|background) — (.+?) -->$", re.M)
NOTE = {"skip": "Not run by the docs test", "background": "Run in the background by the docs test"}


def on_page_markdown(markdown: str, page, config, files):  # noqa: ARG001 (mkdocs hook signature)
    return MARKER.sub(lambda m: f"*{NOTE[m.group(1)]}: {m.group(2)}.*\n", markdown)
