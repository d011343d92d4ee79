"""Check that no measured figure of the old README was lost when it moved into the docs.

    python docs/scripts/check_figures.py [REV]    (default 19cc5ac, the last commit with the 816-line README)

Reads README.md at git revision REV and lists (1) every table row of it that is not found
verbatim in today's README.md, BENCHMARKS.md or docs/**/*.md, and (2) every number token with
a decimal point, a percent sign, a ± or a thousands separator (the measured figures: 0.907,
84.1%, 2,000, 2.8×…) that occurs nowhere in them. Exit code 1 if anything is missing.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURE = re.compile(r"[−+-]?\d[\d,]*\.\d+%?|[−+-]?\d[\d,]*%|\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?×")


def corpus() -> str:
    files = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return "\n".join(f.read_text() for f in files)


def main(rev: str = "19cc5ac") -> int:
    old = subprocess.run(["git", "show", f"{rev}:README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    text = corpus()
    rows = [line.strip() for line in old.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]
    lost_rows = [r for r in rows if r not in text]
    tokens = sorted(set(FIGURE.findall(old)))
    lost_tokens = [t for t in tokens if t not in text]
    print(f"old README ({rev}): {len(old.splitlines())} lines, {len(rows)} table rows, {len(tokens)} distinct figures")
    print(f"table rows not found verbatim: {len(lost_rows)}")
    for r in lost_rows:
        print("  ", r[:150])
    print(f"figures not found: {len(lost_tokens)}")
    for t in lost_tokens:
        print("  ", t)
    return 1 if lost_rows or lost_tokens else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
