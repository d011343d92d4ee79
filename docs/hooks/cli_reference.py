"""MkDocs hook: the CLI reference page is generated from the typer app at build time.

``docs/reference/cli.md`` holds the marker ``<!-- lrprec-cli-reference -->``; this hook
replaces it with the usage, arguments and options of every ``lrprec`` command, read from
the click command that typer builds (``typer.main.get_command``), so the page can never
drift from ``lrprec --help``.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
MARKER = "<!-- lrprec-cli-reference -->"


def cli_markdown() -> str:
    """Markdown for every command of the ``lrprec`` app (headings start at level 2)."""
    import click
    import typer
    from typer.cli import get_docs_for_click

    if str(SRC) not in sys.path:  # a checkout without `pip install -e .` still builds its own CLI's page
        sys.path.insert(0, str(SRC))
    from lrprec.cli import load_commands

    command = typer.main.get_command(load_commands())
    ctx = click.Context(command, info_name="lrprec")
    try:
        text = get_docs_for_click(obj=command, ctx=ctx, name="lrprec", title="lrprec")
    except TypeError:  # typer releases before the ``title`` argument
        text = get_docs_for_click(obj=command, ctx=ctx, name="lrprec")
    text = re.sub(r"\A# lrprec\n", "## `lrprec`\n", text)  # the page's own title is the only level-1 heading
    return "\n".join(_escape_help(line) for line in text.split("\n"))


def _escape_help(line: str) -> str:
    """Escape square brackets in an option's help text (``category[, title]`` is no Markdown link)."""
    head, sep, help_text = line.partition("`: ")
    if not (line.startswith("* `") and sep):
        return line
    return head + sep + help_text.replace("[", "\\[").replace("]", "\\]")


def on_page_markdown(markdown: str, page, config, files):  # noqa: ARG001 (mkdocs hook signature)
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_markdown())
