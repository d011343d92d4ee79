"""Write docs/changelog.md from the git history: one section per day, newest first, one line per commit.

    python docs/scripts/make_changelog.py [OUT]   (default docs/changelog.md)

Run it before a release (or whenever the page should catch up); the page is committed, so the
site builds without git history (a shallow CI clone).
"""
from __future__ import annotations

import subprocess
import sys
from itertools import groupby
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def changelog() -> str:
    log = subprocess.run(["git", "log", "--no-merges", "--date=short", "--format=%ad%x09%h%x09%s"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    entries = [line.split("\t", 2) for line in log.splitlines() if line.count("\t") >= 2]
    out = ["# Changelog", "", "Every change, newest first, from the project's git history",
           "(`python docs/scripts/make_changelog.py` regenerates this page).", ""]
    for day, commits in groupby(entries, key=lambda e: e[0]):
        out += [f"## {day}", ""]
        out += [f"- {subject.replace('<', '&lt;')} (`{sha}`)" for _, sha, subject in commits]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "changelog.md"
    target.write_text(changelog())
    print(target)
