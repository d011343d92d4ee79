"""Issue 26 in the paper-like setting: the mark (or ``--kind tint``) catalog, models trained with ``--recon-weight 0 --rank-weight 1``.

Per seed, one step at a time on one thread (the steps, figures and table of :mod:`audit_correct`):

    lrprec synth CAT --spurious 0.9 --seed S                # --spurious-kind tint with --kind tint
    lrprec train CAT --out PLAIN  --recon-weight 0 --rank-weight 1 --seed S
    lrprec train CAT --out ORACLE --recon-weight 0 --rank-weight 1 --seed S --mark-augment 0.5
    lrprec audit PLAIN
    lrprec correct PLAIN --out CORRECTED          # the defaults (refuses when the audit flags nothing)
    shortcut report (test split) of each model

Every step is skipped when its output exists (the script resumes). Layout as in audit_correct.py:
catalogs ``OUT/<kind>-<seed>``, runs ``OUT/runs/<kind>-<seed>-{plain,oracle,default}``.

    python experiments/audit_correct_paperlike.py OUT --seeds 0 1 2 \\
        --json experiments/results/audit_correct_paperlike_session10.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_correct import audit_summary, catalog, lrprec, measure, table  # noqa: E402

PAPER_LIKE = ["--recon-weight", "0", "--rank-weight", "1"]


def seed_row(out: Path, seed: int, timings: dict, kind: str = "mark") -> dict:
    data = catalog(out, kind, seed)
    runs = out / "runs"
    plain, oracle, corrected = (runs / f"{kind}-{seed}-{v}" for v in ("plain", "oracle", "default"))
    for run, extra in ((plain, []), (oracle, ["--mark-augment", "0.5"])):
        if not (run / "config.json").exists():
            timings[run.name] = lrprec("train", str(data), "--out", str(run), "--seed", str(seed), *PAPER_LIKE, *extra,
                                       log=run.with_suffix(".log"))
    if not (plain / "audit" / "audit.json").exists():
        timings[f"{kind}-{seed}-audit"] = lrprec("audit", str(plain), log=plain / "audit.log")
    flagged = json.loads((plain / "audit" / "audit.json").read_text())["flagged"]
    if flagged is not None and not (corrected / "config.json").exists():
        timings[corrected.name] = lrprec("correct", str(plain), "--out", str(corrected), log=corrected.with_suffix(".log"))
    row = {"kind": kind, "seed": seed, "audit": audit_summary(plain, kind), "models": {}}
    for variant, run in (("plain", plain), ("default", corrected), ("oracle", oracle)):
        if (run / "config.json").exists():
            cfg = json.loads((run / "config.json").read_text())
            row["models"][variant] = {"epochs": cfg.get("epochs"), "test": measure(run, kind, "test")}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--kind", choices=["mark", "tint"], default="mark")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results = []
    for s in args.seeds:
        t0 = time.perf_counter()
        results.append(seed_row(args.out, s, timings, args.kind))
        print(f"seed {s} done in {time.perf_counter() - t0:.0f} s: "
              + json.dumps({v: round(m["test"]["accuracy"], 3) for v, m in results[-1]["models"].items()}), flush=True)
        if args.json:  # after every seed: a partial table survives an interrupted run
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"command": " ".join(sys.argv), "setting": PAPER_LIKE, "kind": args.kind, "timings_s": timings,
                                             "results": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
