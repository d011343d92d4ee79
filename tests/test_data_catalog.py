"""Catalog format, splits and negative sampling."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lrprec.data.catalog import RELATIONS, Catalog, CatalogError
from lrprec.data.synthetic import SynthConfig, generate


def _unordered(p, k):
    return (min(p.a[k], p.b[k]), max(p.a[k], p.b[k]), p.relation[k], p.user[k])


def test_describe_counts(tiny_catalog):
    d = Catalog(tiny_catalog).describe()
    assert d["items"] == 160 and d["users"] == 3
    assert set(d["relations"]) == set(RELATIONS)
    assert sum(d["relations"].values()) == 4 * 80
    for s in ("validation", "test"):
        assert d["splits"][s]["positives"] == d["splits"][s]["negatives"]
    assert d["splits"]["train"]["negatives"] == 0


def test_splits_are_disjoint_and_cover_positives(tiny_catalog):
    cat = Catalog(tiny_catalog)
    seen = {}
    for split in ("train", "validation", "test"):
        p = cat.pairs(split)
        for k in np.flatnonzero(p.label == 1):
            key = _unordered(p, k)
            assert key not in seen, f"pair {key} in {seen.get(key)} and {split}"
            seen[key] = split
    assert len(seen) == len(cat.positives())
    # 80/10/10 per relation
    tr = cat.pairs("train")
    for r in range(4):
        assert (tr.relation == r).sum() == 64


def test_negatives_are_never_positives(tiny_catalog):
    cat = Catalog(tiny_catalog)
    pos = cat.positives()
    known = {(a, b, r) for a, b, r in zip(pos.a, pos.b, pos.relation)} | {(b, a, r) for a, b, r in zip(pos.a, pos.b, pos.relation)}
    attrs = np.load(tiny_catalog / "attributes.npy")
    for split in ("validation", "test"):
        p = cat.pairs(split)
        neg = np.flatnonzero(p.label == 0)
        assert neg.size > 0
        for k in neg:
            assert (p.a[k], p.b[k], p.relation[k]) not in known
            assert p.a[k] != p.b[k]
            # negatives come from the partner's category
        pos_rows = np.flatnonzero(p.label == 1)
        assert set(cat.category_codes[p.b[neg]]) <= set(cat.category_codes[p.b[pos_rows]])
        assert attrs.shape == (160, 4)


def test_same_seed_same_bytes(tmp_path):
    cfg = SynthConfig(items=40, users=2, image_size=24, pairs_per_relation=20, seed=11)
    a = generate(tmp_path / "a", cfg, progress=False)
    b = generate(tmp_path / "b", cfg, progress=False)

    def digest(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(a) == digest(b)
    c = generate(tmp_path / "c", SynthConfig(items=40, users=2, image_size=24, pairs_per_relation=20, seed=12), progress=False)
    assert digest(a)["images.npy"] != digest(c)["images.npy"]


def test_masks_cover_the_item_not_the_background(tiny_catalog):
    cat = Catalog(tiny_catalog)
    frac = cat.masks.reshape(len(cat), -1).mean(1)
    assert (frac > 0.05).all() and (frac < 0.7).all()


def test_errors_name_the_problem(tmp_path, tiny_catalog):
    with pytest.raises(CatalogError, match="not found"):
        Catalog(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="not an lrprec catalog"):
        Catalog(tmp_path / "empty")
    cat = Catalog(tiny_catalog)
    with pytest.raises(CatalogError, match="unknown item"):
        cat.index_of("nope")
    with pytest.raises(CatalogError, match="unknown category"):
        cat.check_category("sofa")
    with pytest.raises(CatalogError, match="unknown split"):
        cat.pairs("dev")


def test_corrupt_image_cache_is_named(tmp_path, tiny_catalog):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_catalog, broken)
    data = (broken / "images.npy").read_bytes()
    (broken / "images.npy").write_bytes(data[: len(data) // 3])
    with pytest.raises(CatalogError, match="images.npy"):
        Catalog(broken).images


def test_write_catalog_refuses_to_overwrite(tmp_path):
    cfg = SynthConfig(items=30, users=0, image_size=16, pairs_per_relation=10, seed=0)
    generate(tmp_path / "x", cfg, progress=False)
    with pytest.raises(CatalogError, match="exists"):
        generate(tmp_path / "x", cfg, progress=False)
    assert not list(tmp_path.glob(".x.partial-*"))


@pytest.mark.parametrize("outcome", ["success", "error", "interrupt"])
def test_synth_leaves_no_temporary_folder(tmp_path, monkeypatch, outcome):
    """The generator's temporary PNG folder is gone after success, an error (--out taken) and a Ctrl-C."""
    import tempfile

    import lrprec.data.synthetic as synthetic

    system_tmp = tmp_path / "tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "cat"
    if outcome == "error":
        out.mkdir()
        (out / "something").write_text("x")
    if outcome == "interrupt":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(synthetic, "write_catalog", interrupted)
    config = SynthConfig(items=20, users=1, image_size=16, pairs_per_relation=10, seed=0)
    if outcome == "success":
        generate(out, config, progress=False)
        assert len(list((out / "images").glob("*.png"))) == 20
    else:
        with pytest.raises(KeyboardInterrupt if outcome == "interrupt" else CatalogError):
            generate(out, config, progress=False)
    assert list(system_tmp.iterdir()) == []
