"""Issue 26, session 11: the erasure step of ``lrprec correct`` applied to corrections made before it existed.

``lrprec correct``'s default (``auto`` → augment with the discovered artifact, retrained from the run's seed) now ends
with :func:`lrprec.train.correct._erase`. Training is deterministic for a seed and the erasure only reads the trained
model, so applying ``_erase`` to a stored ``auto`` correction gives what ``lrprec correct`` writes today (checked end to
end on tint seed 2: the same bytes). For each (kind, plain run, corrected run): the artifact is found again from the
plain run's audit (:func:`choose_artifact`, as ``correct`` does), the corrected run is copied to OUT/NAME and erased,
and both are measured on the test split (``experiments/audit_correct.py``'s ``measure``: the shortcut report and the
decision probe).

    python experiments/erasure_posthoc.py OUT --json experiments/results/audit_correct_erasure_s11.json \\
        --runs mark:PLAIN:CORRECTED:NAME [...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from audit_correct import measure  # noqa: E402


def erase_copy(plain: Path, corrected: Path, out: Path) -> dict:
    from lrprec.run import Run
    from lrprec.train import correct as C

    prun = Run.load(plain)
    audit, folder = C.read_audit(prun, None)
    cluster = C.pick_cluster(audit, None)
    rows = C.training_items(prun)
    concept = C.fit_concept(prun, C.concept_labels(len(prun.catalog), cluster), rows, 3)
    choice = C.choose_artifact(prun, cluster, folder, concept, rows, 0.5)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(corrected, out)
    run = Run.load(out)
    summary = {"val_accuracy": C.validation_accuracy(run.model, run)}
    t0 = time.perf_counter()
    C._erase(out, choice["flip"], rows, summary, print)
    return {"form": choice["form"], "scores": choice["scores"], "erasure": summary["erasure"], "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", nargs="+", required=True, help="KIND:PLAIN:CORRECTED:NAME")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for spec in args.runs:
        kind, plain, corrected, name = spec.split(":")
        erased = args.out / name
        info = erase_copy(Path(plain), Path(corrected), erased)
        row = {"name": name, "kind": kind, "plain": plain, "corrected": corrected, **info,
               "before": measure(Path(corrected), kind, "test"), "after": measure(erased, kind, "test")}
        rows.append(row)
        a = row["after"]
        print(f"{name}: test {100 * a['accuracy']:.1f}%, disagrees {100 * a['disagrees']:.1f}%, sensitivity {a['sensitivity']:+.3f}, "
              f"probe {100 * a['probe']['accuracy']:.1f}% (chance {100 * a['probe']['chance']:.1f}%)", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"command": " ".join(sys.argv), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
