"""The one-shot demo: synthetic catalog → training → evaluation → explanations → report.

Every stage caches its output in the demo directory and is skipped when already done
with the same settings, so a rerun only rebuilds the report.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError
from lrprec.data.synthetic import SynthConfig, generate
from lrprec.errors import UsageError
from lrprec.files import atomic_write_text
from lrprec.train.trainer import TrainConfig, train


# The guidance section keeps the setting its README experiment was measured in (the paper's
# metric head and objective, category negatives, K = 10, no warm-up, no appearance loss): see README's guidance section.
GUIDE_SETTING = {"dim": 10, "head": "metric", "negatives": "category", "rank_weight": 0.0, "warmup_epochs": 0.0, "recon_weight": 0.0}


@dataclass
class DemoConfig:
    """The demo's sizes: ``default`` (``make demo``: every section in a few minutes on 2 CPU cores),
    ``full`` (the README's full runs: the default catalog, library-default training, the guidance
    experiment's catalog and length) and ``quick`` (the tests: every stage, numbers near chance)."""

    synth: SynthConfig
    train: TrainConfig
    faithfulness_pairs: int = 48
    faithfulness_steps: int = 24
    faithfulness_imputers: tuple[str, ...] = ("uniform", "linear")
    randomization_pairs: int = 8
    audit_pairs: int = 256  # the audit of the unguided shortcut model: validation pairs explained (both images)
    # the explanation-guided training section: a shortcut catalog, trained without and with guidance
    guidance_synth: SynthConfig | None = None
    guidance_train: TrainConfig | None = None
    size: str = "default"

    @classmethod
    def default(cls, quick: bool = False, seed: int = 0, full: bool = False) -> "DemoConfig":
        """The ``make demo`` size (``quick`` / ``full``: those sizes instead)."""
        if quick and full:
            raise UsageError("--quick and --full exclude each other")
        if quick:
            return cls.quick(seed)
        if full:
            return cls.full(seed)
        # A smaller catalog and shorter training than the README's full runs (see README "The demo"):
        # every section in about 3½ minutes on 2 CPU cores (docs/results/demo.md; guidance, audit and correction in a second process), the model still far above its baselines
        # and its top-10 lists still following the catalog's rules; the guidance section keeps the full-size
        # shortcut catalog for 2 of its 10 epochs (the guided model's best validation epoch among the first 3).
        return cls(SynthConfig(items=1000, pairs_per_relation=1000, seed=seed), TrainConfig(epochs=14, seed=seed),
                   faithfulness_pairs=16, faithfulness_steps=12, randomization_pairs=8,
                   guidance_synth=SynthConfig(seed=seed, spurious=0.9), guidance_train=TrainConfig(epochs=2, seed=seed, **GUIDE_SETTING), size="default")

    @classmethod
    def full(cls, seed: int = 0) -> "DemoConfig":
        """The README's full runs: the default catalog and training (the three-seed table's seed row)
        and the guidance experiment's shortcut catalog, 10 epochs (about 15 minutes on 2 CPU cores)."""
        return cls(SynthConfig(seed=seed), TrainConfig(seed=seed),
                   guidance_synth=SynthConfig(seed=seed, spurious=0.9), guidance_train=TrainConfig(epochs=10, seed=seed, **GUIDE_SETTING), size="full")

    @classmethod
    def quick(cls, seed: int = 0) -> "DemoConfig":
        """Every stage on a tiny catalog (the tests; about a minute, numbers near chance).

        Trained without the appearance loss: it slows the first epochs down (README), and three
        epochs would leave the quick model at chance.
        """
        return cls(SynthConfig(items=600, pairs_per_relation=500, seed=seed), TrainConfig(epochs=3, seed=seed, recon_weight=0.0),
                   faithfulness_pairs=16, faithfulness_steps=12,
                   faithfulness_imputers=("uniform",), randomization_pairs=2,
                   guidance_synth=SynthConfig(items=400, pairs_per_relation=400, seed=seed, spurious=0.9),
                   guidance_train=TrainConfig(epochs=2, seed=seed, **GUIDE_SETTING), size="quick")


def _stage_done(marker: Path, settings: dict) -> bool:
    return marker.exists() and json.loads(marker.read_text()) == settings


def _mark(marker: Path, settings: dict) -> None:
    atomic_write_text(marker, json.dumps(settings, indent=2, sort_keys=True))


def run_ablation(data: Path, run: Path, out: Path, cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Train the frozen-backbone and non-personalized variants beside ``run``; write RUN/comparison.json."""
    from dataclasses import replace

    from lrprec.app.evaluation import evaluate_run

    variants = {"end-to-end, personalized (default)": run}
    for name, change in (("frozen random backbone ([M15] setting)", {"freeze_backbone": True}), ("not personalized", {"personalize": False})):
        path = out / ("run-" + "-".join(f"{k}" for k in change))
        settings = {"train": asdict(replace(cfg.train, **change)), "catalog": Catalog(data).fingerprint}
        if not _stage_done(path / ".demo-train", settings):
            log(f"      ablation: training the {name} variant")
            train(data, path, replace(cfg.train, **change), log=log)
            _mark(path / ".demo-train", settings)
        variants[name] = path
    comparison = {name: evaluate_run(path, "test") for name, path in variants.items()}
    atomic_write_text(run / "comparison.json", json.dumps(comparison, indent=2))
    return comparison


DEMO_BASELINES = ("random", "popularity", "category-tree")


def run_baselines(data: Path, run: Path, log: Callable[[str], None] = print) -> dict:
    """The ranking baselines on the test split beside the model; writes RUN/baselines.json ({split: {name: report}})."""
    from lrprec.evaluate.baselines import evaluate_baseline

    reps = {name: evaluate_baseline(data, name, split="test", relations=json.loads((run / "config.json").read_text())["relations"])
            for name in DEMO_BASELINES}
    for name, rep in reps.items():
        rk = rep["ranking"]["overall"]
        log(f"      baseline {name:<14} recall@10 {rk['recall@10']:.3f}  MRR {rk['mrr']:.3f}  "
            f"accuracy {100 * rep['protocols']['random']['overall']['accuracy']:.1f}% (random negatives)")
    atomic_write_text(run / "baselines.json", json.dumps({"test": reps}, indent=2))
    return reps


GUIDED = {"guide": "lrp", "guide_weight": 1.0, "guide_masks": "gt"}
AUGMENTED = {"mark_augment": 0.5}  # the explanation-free baseline: each training image's mark re-drawn w.p. 0.5


GUIDANCE_VARIANTS: dict[str, tuple[str, dict]] = {  # report name -> (directory suffix, training change)
    "unguided": ("unguided", {}), f"LRP-guided (ground-truth masks, λ = {GUIDED['guide_weight']:g})": ("guided", GUIDED),
    f"counterfactual augmentation (no explanation, p = {AUGMENTED['mark_augment']:g})": ("augmented", AUGMENTED)}


def train_guidance_models(out: Path, cfg: DemoConfig, log: Callable[[str], None] = print, progress: bool = True,
                          audit: bool = True) -> dict[str, dict]:
    """The guidance section's heavy half: the shortcut catalog, the unguided, LRP-guided and
    augmented models trained on it, and their shortcut reports (keyed by variant name); ``audit``:
    then the audit of the unguided model and its correction (:func:`audit_and_correct`; its report
    under :data:`CORRECTED_NAME` when the audit flags a cluster).
    Touches only ``out/shortcut-*``, so it can run beside the main pipeline."""
    from dataclasses import replace

    from lrprec.app.evaluation import shortcut_report

    assert cfg.guidance_synth is not None and cfg.guidance_train is not None
    data = out / "shortcut-data"
    try:
        have = Catalog(data).meta.get("config") == asdict(cfg.guidance_synth)
    except CatalogError:
        have = False
    if not have:
        log(f"      generating a shortcut catalog ({cfg.guidance_synth.items} items, watermark agreeing with {100 * cfg.guidance_synth.spurious:.0f}% of training labels)")
        generate(data, cfg.guidance_synth, overwrite=True, progress=False)
    reports = {}
    for name, (short, change) in GUIDANCE_VARIANTS.items():
        path = out / f"shortcut-{short}"
        tcfg = replace(cfg.guidance_train, **change)
        settings = {"train": asdict(tcfg), "catalog": Catalog(data).fingerprint}
        if not _stage_done(path / ".demo-train", settings):
            log(f"      training {name} on the shortcut catalog ({tcfg.epochs} epochs)")
            train(data, path, tcfg, progress=progress, log=log)
            _mark(path / ".demo-train", settings)
        reports[name] = shortcut_report(path)
    corrected = audit_and_correct(out, cfg, log, progress) if audit else None
    if corrected is not None:
        reports[CORRECTED_NAME] = corrected
    return reports


CORRECTED_NAME = "corrected (audit's flagged cluster, lrprec correct defaults)"


def audit_and_correct(out: Path, cfg: DemoConfig, log: Callable[[str], None] = print, progress: bool = True) -> dict | None:
    """The audit → correct story on the shortcut catalog, told nothing about the watermark: ``lrprec audit`` of the
    unguided model (``out/shortcut-unguided/audit/``), then ``lrprec correct`` with its defaults into
    ``out/shortcut-corrected`` (the same Python API the commands call). Returns the corrected model's shortcut
    report, or None when the audit flags no cluster (``correct`` would refuse: nothing to remove)."""
    from lrprec.app.evaluation import shortcut_report
    from lrprec.evaluate.audit import audit_run
    from lrprec.train.correct import CorrectConfig, correct

    plain, path = out / "shortcut-unguided", out / "shortcut-corrected"
    marker = plain / "audit" / ".demo-audit"
    settings = {"model": json.loads((plain / ".demo-train").read_text()), "pairs": cfg.audit_pairs}
    if not _stage_done(marker, settings):
        log(f"      auditing the unguided model (lrprec audit: SpRAy on the LRP heatmaps of {cfg.audit_pairs} validation pairs, judged by behaviour)")
        audit = audit_run(plain, pairs=cfg.audit_pairs)
        _mark(marker, settings)
    else:
        audit = json.loads((plain / "audit" / "audit.json").read_text())
    if audit["flagged"] is None:
        log(f"      the audit flagged none of its {audit['n_clusters']} clusters: nothing to correct")
        shutil.rmtree(path, ignore_errors=True)  # a correction of an earlier audit no longer applies
        return None
    ccfg = CorrectConfig(overwrite=True)  # the defaults of 'lrprec correct PLAIN --out CORRECTED'
    settings = {"audit": settings, "correct": asdict(ccfg)}
    if not _stage_done(path / ".demo-train", settings):
        log(f"      correcting it (lrprec correct with its defaults: cluster {audit['flagged']})")
        correct(plain, path, ccfg, progress=progress, log=log)
        _mark(path / ".demo-train", settings)
    return shortcut_report(path)


def run_guidance(out: Path, run: Path, cfg: DemoConfig, log: Callable[[str], None] = print, reports: dict[str, dict] | None = None) -> dict:
    """Shortcut catalog → unguided, LRP-guided and counterfactually augmented training → shortcut reports
    (``reports``: those already made by :func:`train_guidance_models`) → one pair explained by each
    model → the audit of the unguided model and its correction; writes RUN/guidance.json."""
    from lrprec.run import Run

    assert cfg.guidance_synth is not None and cfg.guidance_train is not None
    if reports is None:
        reports = train_guidance_models(out, cfg, log)
    result: dict = {"catalog": asdict(cfg.guidance_synth), "train": asdict(cfg.guidance_train), "variants": {}}
    example = _example_pair(out / "shortcut-data", Run.load(out / "shortcut-unguided"))
    if example is not None:
        result["example_relation"] = example[1]
    for name, (short, _) in GUIDANCE_VARIANTS.items():
        rep = reports[name]
        _explain_example(out / f"shortcut-{short}", run, rep, example)
        result["variants"][name] = rep
        _log_shortcut(name, rep, log)
    result["audit_correct"] = audit_correct_result(out, run, reports.get(CORRECTED_NAME), example, log)
    atomic_write_text(run / "guidance.json", json.dumps(result, indent=2))
    return result


def _example_pair(data: Path, r) -> tuple[tuple[str, str], str] | None:
    """((item a, item b), relation): the first positive validation pair whose images both carry the watermark."""
    tags = np.load(data / "shortcut_tags.npy")
    val = r.catalog.pairs("validation")
    both = np.flatnonzero((tags[val.a] == 1) & (tags[val.b] == 1) & (val.label == 1))
    if not both.size:
        return None
    k = int(both[0])
    return (r.catalog.item_ids[val.a[k]], r.catalog.item_ids[val.b[k]]), RELATIONS[val.relation[k]]


def _explain_example(path: Path, run: Path, rep: dict, example: tuple[tuple[str, str], str] | None) -> None:
    """The example pair explained by the model in ``path``: its heatmap figure goes into ``rep['figure']``."""
    from lrprec.app.explanations import explain_ids
    from lrprec.run import Run

    if example is None:
        return
    fig = explain_ids(Run.load(path), [example[0]], relation=example[1], target="logit", rule=rep["composite"], out=run / "guidance" / path.name)[0]
    rep["figure"] = next((f for f in fig["files"] if f.endswith("heatmaps.png")), None)


def _log_shortcut(name: str, rep: dict, log: Callable[[str], None]) -> None:
    agree, disagree = rep["test_accuracy_mark_agrees"], rep["test_accuracy_mark_disagrees"]
    log(f"      {name:<40} test accuracy {100 * rep['test_accuracy']:.1f}% (where the mark agrees / disagrees with the label "
        f"{'–' if agree is None else f'{100 * agree:.1f}'} / {'–' if disagree is None else f'{100 * disagree:.1f}'}%)  "
        f"relevance on the watermark {100 * (rep['mark_share'] or 0):.1f}%  "
        f"shortcut sensitivity {rep['counterfactual']['sensitivity']:+.3f}" + (f"\n      {rep['alarm']}" if rep.get('alarm') else ""))


def audit_correct_result(out: Path, run: Path, corrected: dict | None, example: tuple[tuple[str, str], str] | None,
                         log: Callable[[str], None] = print) -> dict | None:
    """The audit → correct part of RUN/guidance.json: the audit's clusters (their figures copied to
    RUN/guidance/audit/, and — measured with the watermark the audit was not told about — the share of each
    cluster's distinctive relevance inside the mark's box), the correction's summary and the corrected model's
    shortcut report (None when nothing was flagged), beside the names of the plain and oracle variants; None
    when the unguided model was not audited (:func:`train_guidance_models` with ``audit=False``)."""
    from lrprec.data.watermark import watermark_box

    src = out / "shortcut-unguided" / "audit"
    if not (src / ".demo-audit").exists():
        return None
    audit = json.loads((src / "audit.json").read_text())
    figures = run / "guidance" / "audit"
    figures.mkdir(parents=True, exist_ok=True)
    clusters = []
    for c in audit["clusters"]:
        region = np.abs(np.load(src / c["region"]))
        o, m = watermark_box(region.shape[0])
        clusters.append({**{k: c[k] for k in ("id", "size", "n_heatmaps", "score", "suspicious", "tests", "prototypes")},
                         "mass_in_mark_box": float(region[o:o + m, o:o + m].sum() / max(float(region.sum()), 1e-300)),
                         "figure": str(shutil.copyfile(src / c["figure"], figures / c["figure"]))})
    flagged = next((c for c in clusters if c["id"] == audit["flagged"]), None)
    log(f"      audit of the unguided model: {audit['n_clusters']} clusters, flagged "
        + ("none" if flagged is None else f"cluster {flagged['id']} ({flagged['size']} items, score {flagged['score']:+.3f}, "
           f"{100 * flagged['mass_in_mark_box']:.0f}% of its relevance inside the watermark's box)"))
    result = {"audit": {k: audit[k] for k in ("pairs", "heatmaps", "split", "n_clusters", "flagged", "rule", "composite")}, "clusters": clusters,
              "plain": next(iter(GUIDANCE_VARIANTS)), "oracle": list(GUIDANCE_VARIANTS)[-1], "corrected": corrected, "correction": None}
    if corrected is not None:
        path = out / "shortcut-corrected"
        result["correction"] = json.loads((path / "correction.json").read_text())
        _explain_example(path, run, corrected, example)
        _log_shortcut(CORRECTED_NAME, corrected, log)
    return result


def _guidance_process(out: str, cfg: DemoConfig, threads: int) -> tuple[list[str], dict[str, dict], float]:
    """:func:`train_guidance_models` in the demo's second process, on ``threads`` threads:
    returns its log lines (printed when the main pipeline reaches the section), the reports and its seconds."""
    import torch

    torch.set_num_threads(threads)
    lines: list[str] = []
    t = time.perf_counter()
    reports = train_guidance_models(Path(out), cfg, lines.append, progress=False)
    return lines, reports, time.perf_counter() - t


def _send_result(conn, fn: Callable, args: tuple) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException as e:  # handed to the parent, which re-raises it
        import traceback

        try:
            conn.send((False, e))
        except Exception:  # an exception that does not pickle: its traceback as text
            conn.send((False, RuntimeError(traceback.format_exc())))
    finally:
        conn.close()


class _Background:
    """``fn(*args)`` in a spawned (not daemonic) process; :meth:`result` waits for it and returns
    its value or raises its exception; :meth:`stop` ends it early (the main pipeline failed)."""

    def __init__(self, fn: Callable, *args):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_send_result, args=(child, fn, args), name="lrprec-demo-guidance")
        self._proc.start()
        child.close()

    def result(self):
        try:
            ok, value = self._conn.recv()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"the demo's guidance process ended without a result (exit code {self._proc.exitcode})") from None
        finally:
            self._proc.join()
            self._conn.close()
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._conn.close()


def run_demo(out: str | Path, quick: bool = False, seed: int = 0, ablation: bool = False, guidance: bool = True,
             log: Callable[[str], None] = print, full: bool = False, parallel: bool = True) -> Path:
    """Run every stage on the synthetic catalog into ``out``; returns the report's path.

    ``ablation`` also trains the frozen-backbone and non-personalized variants (doubles the
    time); ``guidance`` trains a model with and without explanation guidance on a shortcut catalog.
    ``quick`` / ``full`` pick those sizes of :class:`DemoConfig` instead of the default one.
    ``parallel`` (with two or more torch threads): the guidance section's trainings run in a second
    process beside the main pipeline, the threads split between the two — two single-threaded
    trainings get more done on 2 cores than one on two threads (measured: an epoch takes 1.5× as
    long on one thread as on two). The numbers depend on the thread count each part gets (README).
    """
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DemoConfig.default(quick, seed, full=full)
    threads = torch.get_num_threads()
    background: _Background | None = None
    try:
        if guidance and parallel and threads >= 2:
            side = threads // 2
            background = _Background(_guidance_process, str(out), cfg, side)
            torch.set_num_threads(threads - side)
            log(f"      the guidance section trains in a second process ({side} of {threads} threads; its results come at step 4)")
        path = _run_stages(out, cfg, ablation, guidance, log, background)
        background = None
        return path
    finally:
        torch.set_num_threads(threads)
        if background is not None:
            background.stop()


def _run_stages(out: Path, cfg: DemoConfig, ablation: bool, guidance: bool, log: Callable[[str], None], background: _Background | None) -> Path:
    t_start = time.perf_counter()
    data, run = out / "data", out / "run"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    synth_settings = asdict(cfg.synth)
    try:
        have_data = Catalog(data).meta.get("config") == synth_settings
    except CatalogError:
        have_data = False
    if not have_data:
        log(f"[1/5] generating the synthetic catalog ({cfg.synth.items} items, {cfg.size} demo size) in {data}")
        generate(data, cfg.synth, overwrite=True)
    else:
        log(f"[1/5] synthetic catalog already in {data}")
    timings["synth"] = time.perf_counter() - t

    t = time.perf_counter()
    train_settings = {"train": asdict(cfg.train), "catalog": Catalog(data).fingerprint}
    if not _stage_done(run / ".demo-train", train_settings):
        log(f"[2/5] training the {cfg.train.backbone} model end-to-end for {cfg.train.epochs} epochs")
        train(data, run, cfg.train, log=log)
        _mark(run / ".demo-train", train_settings)
    else:
        log(f"[2/5] trained model already in {run}")
    timings["train"] = time.perf_counter() - t

    from lrprec.app.evaluation import evaluate_run
    from lrprec.evaluate.linkpred import evaluation_text

    t = time.perf_counter()
    log("[3/5] evaluating on the test split: Table 1 under both negative protocols, ranking over the catalog, top-10 against the rules")
    report = evaluate_run(run, "test")
    log(evaluation_text(report))
    run_baselines(data, run, log)
    timings["evaluate"] = time.perf_counter() - t

    if ablation:
        t = time.perf_counter()
        comp = run_ablation(data, run, out, cfg, log)
        for name, rep in comp.items():
            pers = rep.get("personalized") or {}
            log(f"      {name:<40} accuracy {100 * rep['overall']['accuracy']:.1f}%  user-carrying pairs {100 * (pers.get('accuracy') or 0):.1f}%")
        timings["ablation"] = time.perf_counter() - t

    for name, stage in _extra_stages():
        t = time.perf_counter()
        log(f"[4/5] {name}")
        stage(run, cfg, log)
        timings[name] = time.perf_counter() - t

    if guidance:
        t = time.perf_counter()
        log("[4/5] explanation-guided training on a shortcut catalog")
        reports = None
        if background is not None:
            lines, reports, seconds = background.result()
            for line in lines:
                log(line)
            timings["guidance (second process, beside the stages above)"] = seconds
        run_guidance(out, run, cfg, log, reports)
        timings["guidance" if background is None else "guidance (waiting for it, figures)"] = time.perf_counter() - t

    from lrprec.report import write_report

    timings["total"] = time.perf_counter() - t_start
    atomic_write_text(run / "demo_timings.json", json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=2))
    path = write_report(run, title="demo on the synthetic catalog")
    log(f"[5/5] report written: {path}")
    return path


def _explain_stage(run: Path, cfg: DemoConfig, log: Callable[[str], None]) -> None:
    from lrprec.app.explanations import explain_examples
    from lrprec.run import Run

    recs = explain_examples(Run.load(run), run / "explain" / "examples")
    log(f"      explained {len(recs)} example pairs")


def _faithfulness_stage(run: Path, cfg: DemoConfig, log: Callable[[str], None]) -> None:
    from lrprec.evaluate.faithfulness import faithfulness
    from lrprec.report.faithfulness import leaderboard_table, write_result
    from lrprec.run import Run

    result = faithfulness(Run.load(run), pairs=cfg.faithfulness_pairs, steps=cfg.faithfulness_steps, seed=cfg.train.seed,
                          imputers=cfg.faithfulness_imputers, randomization_pairs=cfg.randomization_pairs)
    write_result(result, run / "faithfulness")
    log(leaderboard_table(result))


def _recommend_stage(run: Path, cfg: DemoConfig, log: Callable[[str], None]) -> None:
    import numpy as np

    from lrprec.app.explanations import explain_recommendations
    from lrprec.recommend.recommender import build_index, recommend
    from lrprec.run import Run

    r = Run.load(run)
    index = build_index(r)
    cat = r.catalog
    users = cat.user_ids[:2] if len(cat.user_ids) >= 2 else [None, None]
    queries = [cat.item_ids[int(np.flatnonzero(cat.categories == c)[0])] for c in cat.category_names[:2]]
    complements = [x for x in ("also_bought", "bought_together") if x in r.relations] or r.relations[:1]
    out = []
    for q in queries:
        for u in users:
            per_cat = recommend(r, q, user=u, relations=complements[:1], k=1, per_category=True, index=index)
            top = recommend(r, q, user=u, relations=complements[:1], k=5, index=index)
            d = run / "recommendations" / f"{q}__{u or 'global'}"
            figs = explain_recommendations(r, top, d)
            rec = {"item": q, "title": str(cat.titles[cat.index_of(q)]), "user": u, "query_image": str(cat.root / cat.image_paths[cat.index_of(q)]),
                   "per_category": {rel: {c: [{**x, "image": str(cat.root / cat.image_paths[cat.index_of(x["item"])])} for x in lst] for c, lst in cats.items()}
                                    for rel, cats in per_cat["results"].items()},
                   "top": top["results"], "figures": [str(f) for f in figs if f.name == "contact_sheet.png"]}
            out.append(rec)
    (run / "recommendations").mkdir(exist_ok=True)
    atomic_write_text(run / "recommendations" / "recommendations.json", json.dumps(out, indent=2))
    log(f"      recommended for {len(queries)} queries × {len(users)} users")


def _extra_stages() -> list[tuple[str, Callable]]:
    """Stages contributed by the explanation, faithfulness and recommendation packages."""
    return [("explaining example pairs", _explain_stage), ("measuring faithfulness", _faithfulness_stage), ("recommending", _recommend_stage)]
