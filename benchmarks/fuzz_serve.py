"""Schema-driven fuzzing of the web API (issue 30): schemathesis, every check, every operation, a long run.

The app (``create_app`` on a synthetic run) is served in-process over ASGI; schemathesis loads
its OpenAPI schema and runs the same phases as ``st run`` — examples, coverage (boundary
values, non-ASCII, missing/extra parameters, unexpected methods), fuzzing (positive and
negative data) and stateful sequences along the schema's links — with every check enabled.
Target: ≥ 2,000 requests, 0 server errors, 0 conformance failures.

    python benchmarks/fuzz_serve.py                     # --max-examples 40 --seed 0 (the recorded figure)
    python benchmarks/fuzz_serve.py --run RUN --max-examples 200
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def make_run(work: Path) -> Path:
    from lrprec.data.synthetic import SynthConfig, generate
    from lrprec.train import TrainConfig, train

    cat = generate(work / "catalog", SynthConfig(items=200, users=4, image_size=32, pairs_per_relation=100, seed=0), progress=False)
    train(cat, work / "run", TrainConfig(epochs=1, batch_size=64, dim=8, seed=0), progress=False, log=lambda m: None)
    return work / "run"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a trained run (default: a small synthetic one, made here)")
    ap.add_argument("--max-examples", type=int, default=40, help="hypothesis examples per operation and phase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from schema_fuzz import run_fuzz

    from lrprec.serve.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_run(Path(tmp))
        s = run_fuzz(create_app(run), max_examples=args.max_examples, seed=args.seed)
    print(s.report())
    if args.json:
        args.json.write_text(json.dumps({"requests": s.requests, "operations": len(s.operations), "statuses": dict(s.statuses),
                                         "server_errors": s.server_errors, "failures": s.failures, "errors": s.errors,
                                         "seconds": round(s.seconds, 1), "max_examples": args.max_examples, "seed": args.seed}, indent=2))
    ok = s.requests >= 2000 and not s.server_errors and not s.failures and not s.errors
    print(f"target (>= 2,000 requests, 0 server errors, 0 failures): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
