"""Tables for README/BENCHMARKS from experiments/ranking_seeds.sh's reports (issue 19).

Usage: python experiments/summarize_ranking.py OUT [--json experiments/results/ranking_seeds.json]
Prints markdown tables: precision@10 against the rules (global θ and users' θ), pair accuracy
under both negative protocols, recall@10 / MRR of the model and every baseline, and the
seed-0 ablations; with --json also stores every per-seed number in one file.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RELS = ("also_viewed", "buy_after_viewing", "also_bought", "bought_together")
METHODS = ("default", "frozen", "wnn", "category-tree", "popularity", "random")


def load(out: Path, name: str) -> dict | None:
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() and p.stat().st_size else None


def ms(xs: list[float], fmt: str = "{:.3f}") -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format(statistics.stdev(xs))}"


def seeds_of(out: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in out.glob("default-*.json"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    seeds = seeds_of(args.out)
    reps = {m: {s: load(args.out, f"{m}-{s}") for s in seeds} for m in METHODS}
    print(f"seeds: {seeds}\n")

    print("| relation | precision@10 (global θ) | right category side | users' θ: mean precision@10 | users' θ: min over users | pair acc., category negatives | pair acc., random negatives |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in RELS:
        t = [reps["default"][s]["truth"]["relations"][r] for s in seeds]
        pc = [reps["default"][s]["protocols"]["category"]["relations"][r]["accuracy"] for s in seeds]
        pr = [reps["default"][s]["protocols"]["random"]["relations"][r]["accuracy"] for s in seeds]
        print(f"| {r} | {ms([e['precision'] for e in t])} | {ms([e['right_side'] for e in t])} | "
              f"{ms([e.get('users_precision') for e in t])} | {ms([e.get('users_min_precision') for e in t])} | {ms(pc)} | {ms(pr)} |")
    users = {}
    for s in seeds:
        for r in ("also_bought", "bought_together"):
            for u, v in reps["default"][s]["truth"]["relations"][r]["users"].items():
                users.setdefault((r, u), []).append(v["precision"])
    print("\nper user (precision@10 under the user's θ, per seed):", {f"{r}/{u}": [round(x, 2) for x in v] for (r, u), v in users.items()})

    print("\n| method | " + " | ".join(f"{r}: recall@10 / MRR" for r in RELS) + " |")
    print("|---|" + "---:|" * len(RELS))
    for m in METHODS:
        if not all(reps[m].values()):
            continue
        cells = []
        for r in RELS:
            rk = [reps[m][s]["ranking"]["relations"][r] for s in seeds if reps[m][s].get("ranking")]
            cells.append(f"{ms([x['recall@10'] for x in rk])} / {ms([x['mrr'] for x in rk])}")
        print(f"| {m} | " + " | ".join(cells) + " |")

    abl = {name: load(args.out, f"{name}-0") for name in ("default", "negatives-category", "head-metric", "rank-0", "recon-0")}
    if all(abl.values()):
        print("\n| seed 0 | " + " | ".join(RELS) + " | users (complements) | pair acc. (category / random negatives) |")
        print("|---|" + "---:|" * (len(RELS) + 2))
        for name, rep in abl.items():
            t = rep["truth"]["relations"]
            us = statistics.mean(t[r]["users_precision"] for r in ("also_bought", "bought_together"))
            print(f"| {name} | " + " | ".join(f"{t[r]['precision']:.3f}" for r in RELS) + f" | {us:.2f} | "
                  f"{rep['protocols']['category']['overall']['accuracy']:.3f} / {rep['protocols']['random']['overall']['accuracy']:.3f} |")
    if args.json:
        keep = {m: {s: {k: r[k] for k in ("protocols", "ranking", "truth") if k in r} for s, r in d.items() if r} for m, d in reps.items()}
        keep["ablations_seed0"] = {k: {kk: v[kk] for kk in ("protocols", "ranking", "truth")} for k, v in abl.items() if v}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(keep, indent=1))


if __name__ == "__main__":
    main()
