"""The README's figure, drawn from a trained run: one query item, its top recommendations, and
the LRP heatmaps of every recommended pair on both images.

    python docs/scripts/make_figures.py RUN OUT.png [--item ID] [--relation buy_after_viewing] [-k 4] [--user U]

The run needs its index (``lrprec index RUN``). Without ``--item`` the first test-split
positive of ``--relation`` is the query. Top row: the query image and each recommended item
with its rank and P(related); below, for each pair, the relevance on the query and on the
recommended item (ε-z⁺-flat, the similarity target; red for, blue against; one colour scale
per pair, as ``lrprec explain`` draws it).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def _query(run, relation: str) -> str:
    from lrprec.data.catalog import RELATIONS

    pairs = run.catalog.pairs("test")
    keep = (pairs.label == 1) & (pairs.relation == RELATIONS.index(relation))
    if not keep.any():
        raise SystemExit(f"no test positive of {relation}")
    return str(run.catalog.item_ids[pairs.a[keep][0]])


def figure(run_path: str, out: str, item: str | None, relation: str, k: int, user: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrprec.data.catalog import RELATIONS
    from lrprec.explain import DEFAULT_COMPOSITE, explain_pairs
    from lrprec.explain.render import overlay
    from lrprec.recommend import recommend
    from lrprec.run import Run

    run = Run.load(run_path)
    cat = run.catalog
    item = item or _query(run, relation)
    recs = recommend(run, item, user=user, relations=relation, k=k)["results"][relation]
    a = np.full(len(recs), cat.index_of(item), np.int64)
    b = np.asarray([cat.index_of(r["item"]) for r in recs], np.int64)
    rel = torch.full((len(recs),), RELATIONS.index(relation), dtype=torch.long)
    usr = torch.full((len(recs),), cat.user_index(user), dtype=torch.long)
    expl = explain_pairs(run.model, run.inputs(a), run.inputs(b), rel, usr, composite=DEFAULT_COMPOSITE)
    ra, rb = expl.relevance_a.detach().sum(1).numpy(), expl.relevance_b.detach().sum(1).numpy()

    fig, axes = plt.subplots(3, k + 1, figsize=(1.9 * (k + 1), 6.0), dpi=110)
    query = cat.images[a[0]]
    axes[0, 0].imshow(query)
    axes[0, 0].set_title(f"query {item}\n{cat.categories[a[0]]}", fontsize=8)
    axes[1, 0].text(0.5, 0.5, "relevance on\nthe query", ha="center", va="center", fontsize=9)
    axes[2, 0].text(0.5, 0.5, "relevance on the\nrecommendation", ha="center", va="center", fontsize=9)
    for n, r in enumerate(recs):
        vmax = float(max(np.abs(ra[n]).max(), np.abs(rb[n]).max(), 1e-12))
        axes[0, n + 1].imshow(cat.images[b[n]])
        axes[0, n + 1].set_title(f"#{r['rank']} {r['item']}  P = {r['probability']:.2f}\n{r['category']}", fontsize=8)
        axes[1, n + 1].imshow(overlay(query, ra[n], vmax))
        axes[2, n + 1].imshow(overlay(cat.images[b[n]], rb[n], vmax))
        axes[1, n + 1].set_title(f"conservation {float(expl.conservation[n]):.2f}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"lrprec recommend {Path(run_path).name} {item} --relation {relation} -k {k} --explain", fontsize=9,
                 family="monospace")
    fig.tight_layout()
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("--item")
    parser.add_argument("--relation", default="buy_after_viewing")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--user")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(figure(args.run, args.out, args.item, args.relation, args.k, args.user))


if __name__ == "__main__":
    main()
