"""Negative protocols: where negatives come from, in what proportions, and that none is related."""
from __future__ import annotations

import numpy as np
import pytest

from lrprec.data.catalog import RELATIONS, SUBSTITUTES, Catalog, Pairs
from lrprec.data.sampling import DEFAULT_MIX, NegativeSampler, parse_mix
from lrprec.data.rules import catalog_truth_reject, related


@pytest.fixture(scope="module")
def cat(tiny_catalog) -> Catalog:
    return Catalog(tiny_catalog)


def _draw(cat: Catalog, protocol: str, reps: int = 20, **kw) -> tuple[Pairs, Pairs]:
    pos = cat.pairs("train")
    pos = Pairs.concat([pos] * reps)
    neg = NegativeSampler(cat.positives(), cat.category_codes).sample(pos, np.random.default_rng(0), catalog_truth_reject(cat), protocol=protocol, **kw)
    return pos, neg


def test_no_negative_is_a_known_or_rule_implied_positive(cat):
    attrs = np.load(cat.root / "attributes.npy")
    user_attr = np.asarray(cat.meta["user_attribute"])
    known = {(int(a), int(b), int(r)) for a, b, r in zip(cat.positives().a, cat.positives().b, cat.positives().relation)}
    for protocol in ("random", "category", "contrast", "mixed"):
        _, neg = _draw(cat, protocol, reps=3)
        assert len(neg) > 0 and (neg.label == 0).all()
        assert not (neg.a == neg.b).any()
        assert not any((a, b, r) in known or (b, a, r) in known for a, b, r in zip(neg.a.tolist(), neg.b.tolist(), neg.relation.tolist()))
        assert not related(attrs, user_attr, neg.a, neg.b, neg.relation, neg.user).any(), protocol


def test_protocol_categories(cat):
    codes = cat.category_codes
    pos, neg = _draw(cat, "category")
    assert len(neg) == len(pos)  # the tiny catalog always has room
    assert (codes[neg.b] == codes[pos.b]).all()  # the partner's category
    pos, neg = _draw(cat, "contrast")
    sub = np.isin(neg.relation, [RELATIONS.index(r) for r in SUBSTITUTES])
    assert (codes[neg.b][sub] != codes[neg.a][sub]).all()   # substitutes: another category
    assert (codes[neg.b][~sub] == codes[neg.a][~sub]).all()  # complements: the query's own
    pos, neg = _draw(cat, "random")
    # uniform over the catalog: the share of negatives in each category follows the catalog's
    share = np.bincount(codes[neg.b], minlength=len(cat.category_names)) / len(neg)
    want = np.bincount(codes, minlength=len(cat.category_names)) / len(codes)
    np.testing.assert_allclose(share, want, atol=0.04)


def test_mixed_protocol_proportions(cat):
    """With only the substitutes' pairs, a random=0,category=1,contrast=1 mix puts half the negatives outside
    the query's category (contrast) and half in the partner's category — which is the query's for a substitute."""
    pos, neg = _draw(cat, "mixed", mix={"random": 0, "category": 1, "contrast": 1})
    sub = np.isin(neg.relation, [RELATIONS.index(r) for r in SUBSTITUTES])
    codes = cat.category_codes
    outside = (codes[neg.b] != codes[neg.a])[sub].mean()
    assert abs(outside - 0.5) < 0.05
    # the default mix is a third each
    assert DEFAULT_MIX == pytest.approx({"random": 1 / 3, "category": 1 / 3, "contrast": 1 / 3})


def test_parse_mix():
    assert parse_mix("random=1,category=3") == {"random": 0.25, "category": 0.75, "contrast": 0.0}
    assert parse_mix(None) == DEFAULT_MIX
    for bad in ("random", "random=x", "cats=1", "random=-1", "random=0"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_truth_veto_follows_the_rules_category_condition(cat):
    """A same-pattern item of another category is *not* an also_viewed partner (substitutes need the
    same category), and a same-pattern item of the same category is *not* an also_bought partner."""
    attrs = np.load(cat.root / "attributes.npy")
    user_attr = np.asarray(cat.meta["user_attribute"])
    av, ab = RELATIONS.index("also_viewed"), RELATIONS.index("also_bought")
    i = 0
    same_pat = attrs[:, 2] == attrs[i, 2]
    same_cat = attrs[:, 0] == attrs[i, 0]
    other = np.flatnonzero(same_pat & ~same_cat)
    own = np.flatnonzero(same_pat & same_cat & (np.arange(len(attrs)) != i))
    assert other.size and own.size
    assert not related(attrs, user_attr, i, other, av, -1).any()
    assert related(attrs, user_attr, i, own, av, -1).all()
    assert related(attrs, user_attr, i, other, ab, -1).all()
    assert not related(attrs, user_attr, i, own, ab, -1).any()
    # every stored positive satisfies its rule (the generator and the rule agree)
    pos = cat.positives()
    assert related(attrs, user_attr, pos.a, pos.b, pos.relation, pos.user).all()


def test_both_protocols_stored_for_validation_and_test(cat):
    for split in ("validation", "test"):
        c, r = cat.pairs(split, "category"), cat.pairs(split, "random")
        np.testing.assert_array_equal(c.a[c.label == 1], r.a[r.label == 1])  # the same positives
        assert (c.label == 0).sum() > 0 and (r.label == 0).sum() > 0
        codes = cat.category_codes
        cn, rn = c.take(np.flatnonzero(c.label == 0)), r.take(np.flatnonzero(r.label == 0))
        cp = c.take(np.flatnonzero(c.label == 1))
        assert (codes[cn.b] == codes[cp.b][: len(cn)]).mean() > 0.9  # category negatives: the partner's category
        assert (codes[rn.b] != codes[rn.a]).mean() > 0.4             # random negatives: mostly elsewhere
    with pytest.raises(ValueError, match="protocol"):
        cat.pairs("test", "hard")


def test_user_negatives_come_from_other_users_partners_of_the_query(cat):
    """user_share = 1: a user-carrying positive (i, j, r, u) gets j' among i's partners under r in pairs of
    another user or of none (either direction), never one of u's own pairs nor a rule-implied positive for u."""
    attrs = np.load(cat.root / "attributes.npy")
    user_attr = np.asarray(cat.meta["user_attribute"])
    P = cat.positives()
    partners: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for a, b, r, u in zip(P.a.tolist(), P.b.tolist(), P.relation.tolist(), P.user.tolist()):
        partners.setdefault((a, r), set()).add((b, u))
        partners.setdefault((b, r), set()).add((a, u))
    pos, neg = _draw(cat, "random", reps=3, user_share=1.0)
    assert not related(attrs, user_attr, neg.a, neg.b, neg.relation, neg.user).any()
    users = np.flatnonzero(neg.user >= 0)
    assert users.size > 0
    from_others = [any(b == nb and u != nu for b, u in partners.get((na, nr), ()))
                   for na, nb, nr, nu in zip(neg.a[users].tolist(), neg.b[users].tolist(), neg.relation[users].tolist(), neg.user[users].tolist())]
    own = [(nb, nu) in partners.get((na, nr), set())
           for na, nb, nr, nu in zip(neg.a[users].tolist(), neg.b[users].tolist(), neg.relation[users].tolist(), neg.user[users].tolist())]
    assert not any(own)
    # where i has another user's partner that is not related for u, it is used; elsewhere the protocol's draw
    assert np.mean(from_others) > 0.3
    # global pairs are untouched by the option: same draws as without it
    _, plain = _draw(cat, "random", reps=3)
    assert len(plain) == len(neg)
