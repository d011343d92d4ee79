"""Markdown tables of experiments/small_catalogs.py results: one row per (tag, size), mean over seeds (min in brackets).

    python experiments/summarize_small_catalogs.py experiments/results/small_catalogs.jsonl [--policy demote]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

SHORT = {"also_viewed": "av", "buy_after_viewing": "bav", "also_bought": "ab", "bought_together": "bt"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--policy", default="demote")
    a = ap.parse_args()
    groups = defaultdict(list)
    for f in a.files:
        for line in open(f):
            d = json.loads(line)
            groups[(d["tag"], d["items"], d["variants"])].append(d)
    print(f"| tag | items | variants | seeds | precision@10 over the ideal list (av / bav / ab / bt) | complements in own category (ab / bt) "
          f"| complement lists led by a variant | pair acc. test, category / random negatives (worst relation) | epochs |")
    print("|---|---:|---:|---:|---|---|---|---|---:|")
    for (tag, items, variants), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        rels = list(rows[0]["relations"])

        def stat(fn):
            v = np.asarray([fn(r) for r in rows], float)
            return f"{v.mean():.2f}" + (f" ({v.min():.2f})" if len(v) > 1 else "")

        prec = " / ".join(stat(lambda r, x=x: r["relations"][x][a.policy]["precision_of_ideal"]) for x in rels)
        comp = [x for x in rels if x in ("also_bought", "bought_together")]
        own = " / ".join(stat(lambda r, x=x: r["relations"][x][a.policy]["own_category"]) for x in comp)
        lead = " / ".join(stat(lambda r, x=x: r["relations"][x][a.policy].get("dup_lead", 0.0)) for x in comp) if variants > 1 else "-"
        acc = stat(lambda r: min(r["relations"][x]["test_category"] for x in rels)) + " / " + stat(
            lambda r: min(r["relations"][x]["test_random"] for x in rels))
        ep = "/".join(str(r["epochs_run"]) for r in rows)
        print(f"| {tag} | {items} | {variants} | {len(rows)} | {prec} | {own} | {lead} | {acc} | {ep} |")


if __name__ == "__main__":
    main()
