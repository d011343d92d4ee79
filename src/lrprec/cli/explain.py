"""The ``explain`` command: LRP heatmaps for one pair of items."""
from __future__ import annotations

from pathlib import Path

import typer

from lrprec.cli._app import command, emit


@command()
def explain(
    run: Path = typer.Argument(..., help="Run directory."),
    item_a: str = typer.Argument(..., help="First item id."),
    item_b: str = typer.Argument(..., help="Second item id."),
    user: str = typer.Option(None, help="User id (default: the global θ)."),
    relation: str = typer.Option(None, help="Relation to explain (default: the most probable trained one)."),
    target: str = typer.Option("similarity", help="similarity, distance or logit."),
    rule: str = typer.Option(None, help="LRP rule or composite (lrp0, epsilon, gamma, zplus, epsilon-plus-flat, epsilon-gamma-box)."),
    bilrp: bool = typer.Option(False, "--bilrp", help="Also compute second-order BiLRP patch links."),
    out: Path = typer.Option(None, help="Directory for the figures and relevance arrays (default RUN/explain/A__B)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Explain why the model relates two items, with relevance on both images."""
    from lrprec.app.explanations import explain_ids
    from lrprec.run import Run

    r = Run.load(run)
    out = out or r.path / "explain" / f"{item_a}__{item_b}"
    rec = explain_ids(r, [(item_a, item_b)], user=user, relation=relation, target=target, rule=rule, bilrp=bilrp, out=out)[0]
    emit(rec, as_json, _text)


def _text(r: dict) -> str:
    lines = [f"{r['item_a']} ~ {r['item_b']}  relation {r['relation']}  user {r['user'] or '(global)'}  P = {r['probability']:.3f}",
             f"{r['target']} = {r['target_value']:.4g}; relevance on A sums to {r['relevance_sum']['a']:.4g}, on B to {r['relevance_sum']['b']:.4g} ({r['rule']})",
             f"conservation (measured Σ R / the share that should reach the images): {r['conservation']:.3f}"]
    if "bilrp_sum" in r:
        lines.append(f"BiLRP links sum to {r['bilrp_sum']:.4g}")
    lines += [f"wrote {f}" for f in r["files"]]
    return "\n".join(lines)
