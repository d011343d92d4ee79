"""``lrprec faithfulness``: perturbation AOPC, localization and the method leaderboard (SPEC §4)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from lrprec.cli._app import command, emit
from lrprec.defaults import GUIDE_COMPOSITE
from lrprec.errors import UsageError
from lrprec.files import dir_lock


def _split(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError("an empty list was given")
    return items


@command("faithfulness")
def faithfulness_cmd(
    run: Path = typer.Argument(..., help="Run directory (from 'lrprec train')."),
    pairs: int = typer.Option(100, "--pairs", help="Correctly predicted positive pairs to evaluate (seeded choice)."),
    split: str = typer.Option("validation", "--split", help="Pairs of which split: validation (choose methods and composites on it) or test (report)."),
    imputers: str = typer.Option("uniform,linear", "--imputers", help="Comma-separated fills of removed regions: uniform, linear (ROAD), mean."),
    srg_steps: int = typer.Option(16, "--srg-steps", help="Fractions from 0 to all regions removed for symmetric relevance gain."),
    randomization_pairs: int = typer.Option(8, "--randomization-pairs", help="Pairs re-explained as backbone layers are randomized (0: skip the check)."),
    steps: int = typer.Option(50, "--steps", help="Perturbation steps L (regions replaced one per step)."),
    region: Optional[int] = typer.Option(None, "--region", help="Region side S in pixels (default: 4 at 64 px, 9 at 224 px)."),
    orders: str = typer.Option("morf,lrf,random", "--orders", help="Comma-separated orders: morf, lrf, random."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: all available), e.g. lrp,lrp-epsilon,saliency,random."),
    image: str = typer.Option("both", "--image", help="Which image to perturb: a, b or both (each side in turn, the other kept)."),
    target: str = typer.Option("similarity", "--target", help="Explained quantity: similarity, distance or logit."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default RUN/faithfulness)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pair choice, the noise, the random order and the bootstrap."),
    batch_size: int = typer.Option(256, "--batch-size", help="Perturbed images per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Measure how faithful each explanation method is: SRG and AOPC per imputer, a randomization check, the paper's Figure 3 view, localization."""
    from lrprec.evaluate.faithfulness import faithfulness, to_json
    from lrprec.evaluate.progress import StageProgress
    from lrprec.report.faithfulness import leaderboard_table, write_result
    from lrprec.run import Run

    order_list = _split(orders)
    method_list = _split(methods)
    r = Run.load(run)
    log = StageProgress(sys.stderr) if not as_json else None  # the stage running, elapsed, and the time left
    with dir_lock(run, "lrprec faithfulness"):
        try:
            result = faithfulness(r, pairs=pairs, steps=steps, region=region, orders=order_list or (), methods=method_list,
                                  image=image, seed=seed, batch_size=batch_size, target=target, progress=log, split=split,
                                  imputers=_split(imputers) or (), srg_steps=srg_steps, randomization_pairs=randomization_pairs)
        finally:
            if log is not None:
                log.close(complete=sys.exc_info()[0] is None)
        files = write_result(result, out if out is not None else Path(run) / "faithfulness")
    doc = to_json(result)
    doc["files"] = [str(p) for p in files]
    emit(doc, as_json, lambda d: leaderboard_table(d) + "\n\nwritten: " + ", ".join(str(p) for p in files))


@command("shortcut")
def shortcut_cmd(
    run: Path = typer.Argument(..., help="Run trained on a shortcut catalog ('lrprec synth --spurious P')."),
    pairs: int = typer.Option(256, "--pairs", help="Validation pairs to explain (evenly spaced, positives and negatives)."),
    composite: str = typer.Option(None, "--composite", help=f"LRP composite of the explanations (default: the run's guidance composite, else {GUIDE_COMPOSITE})."),
    split: str = typer.Option("test", "--split", help="Pairs the behaviour is measured on: test (report) or validation (choosing settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Shortcut reliance: relevance on the planted watermark (LRP and integrated gradients), test accuracy where it
    agrees / disagrees, and the counterfactual shortcut sensitivity."""
    from lrprec.app.evaluation import shortcut_report
    from lrprec.evaluate.shortcut import shortcut_text

    with dir_lock(run, "lrprec shortcut"):
        report = shortcut_report(run, pairs=pairs, composite=composite, split=split)
    emit(report, as_json, shortcut_text)
