"""MkDocs hook: docstrings written with Sphinx roles (:func:`x`, :class:`X`) render as plain code.

mkdocstrings reads the docstrings as Markdown, where ``:func:`x``` would show the role's name
literally before the code span; this drops the role and keeps the code.
"""
from __future__ import annotations

import re

ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html: str, page, config, files):  # noqa: ARG001 (mkdocs hook signature)
    return ROLE.sub("", html)
