"""bnlab.claims: every seed claim has a proof that runs and supports its verdict, every quote is the
seed's own words (checked against the articles where /work/shared/seeds is present), and the tools
the proofs rest on (the TensorFlow stand-in, the citation check, the listings run as published) do
what they say, against torch and against hand-made cases."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab import claims
from bnlab.claims import (
    CITATIONS,
    CLAIMS,
    SEED004_REFERENCES,
    SEEDS,
    TF_API,
    VERDICTS,
    Claim,
    ProofResult,
    check_references,
    claim_counts,
    claims_table,
    get_claim,
    result_counts,
    run_all,
    run_proof,
    tf_stand_in,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# the articles, where this checkout sits next to the course's shared folder (not in a fresh clone)
SEEDS_DIR = Path(os.environ.get("BNLAB_SEEDS", Path(__file__).resolve().parents[2] / "shared" / "seeds"))
needs_seeds = pytest.mark.skipif(not SEEDS_DIR.is_dir(), reason=f"the seed articles are not at {SEEDS_DIR}")


def seed_text(seed: str) -> str:
    files = sorted(SEEDS_DIR.glob(f"{seed}_*.txt"))
    assert len(files) == 1, f"expected one article {seed}_*.txt in {SEEDS_DIR}, found {files}"
    return files[0].read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def results():
    return run_all(progress=False)


# ----------------------------------------------------------------------------- the registry
def test_registry_has_unique_claims_from_every_seed():
    ids = [c.id for c in CLAIMS]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert {c.seed for c in CLAIMS} == set(SEEDS)
    assert all(c.verdict in VERDICTS for c in CLAIMS)
    assert all(re.match(r"^\d\d\b", c.lesson) for c in CLAIMS), [c.lesson for c in CLAIMS]


def test_every_claim_names_its_own_proof_function():
    names = [c.proof for c in CLAIMS]
    assert len(set(names)) == len(names)
    for claim in CLAIMS:
        proof = getattr(claims, claim.proof, None)
        assert callable(proof), f"{claim.id}: no function {claim.proof}"
        assert proof.claim_id == claim.id
    # and no proof function is left without its claim
    defined = {n for n in dir(claims) if n.startswith("proof_")}
    assert defined == set(names)


def test_counts_per_verdict_and_seed_add_up():
    by_verdict, by_seed = claim_counts(), claim_counts("seed")
    assert list(by_verdict) == list(VERDICTS) and list(by_seed) == list(SEEDS)
    assert sum(by_verdict.values()) == sum(by_seed.values()) == len(CLAIMS)
    for verdict, n in by_verdict.items():
        assert n == len([c for c in CLAIMS if c.verdict == verdict])
    assert all(n > 0 for n in by_verdict.values())
    assert by_verdict["untestable as stated"] <= 5           # few: most sentences can be tested
    assert all(n >= 5 for n in by_seed.values())
    with pytest.raises(ValueError, match="by must be"):
        claim_counts("lesson")


def test_claims_table_rows_follow_the_registry():
    rows = claims_table()
    assert rows == [(c.id, c.seed, c.verdict, c.lesson) for c in CLAIMS]
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)     # in the order of the articles


def test_get_claim_and_bad_claims_are_refused():
    assert get_claim("000-additive-gamma").verdict == "false"
    with pytest.raises(ValueError, match="no claim 'nope'"):
        get_claim("nope")
    good = dict(id="001-x", seed="001", where="w", quote_zh="q", quote_en="q", verdict="true", explanation="e",
                lesson="01", proof="p")
    Claim(**good)
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim(**{**good, "verdict": "mostly true"})
    with pytest.raises(ValueError, match="seed must be one of"):
        Claim(**{**good, "seed": "005", "id": "005-x"})
    with pytest.raises(ValueError, match="must start with its seed"):
        Claim(**{**good, "id": "002-x"})
    with pytest.raises(ValueError, match="explanation is empty"):
        Claim(**{**good, "explanation": " "})


# ----------------------------------------------------------------------------- the seeds' own words
@needs_seeds
@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_quote_is_the_seeds_own_words(claim):
    assert claim.quote_zh in seed_text(claim.seed)


@needs_seeds
@pytest.mark.parametrize("name, seed", [("SEED000_NET", "000"), ("SEED000_TEST_LOOP", "000"),
                                        ("SEED001_TEST_LOOP", "001"), ("SEED002_BNLAYER", "002"),
                                        ("SEED002_MODEL", "002"), ("SEED003_MODULE", "003"),
                                        ("SEED004_LAYER", "004"), ("SEED004_MODEL", "004")])
def test_listings_are_quoted_verbatim(name, seed):
    listing = getattr(claims, name)
    assert listing in seed_text(seed)
    assert listing.count("\n") >= 7                     # a whole listing, not a line of it


@needs_seeds
def test_reference_list_is_quoted_verbatim_and_whole():
    text = seed_text("004")
    tail = text[text.index("# 参考文献"):].strip().split("\n")[1:]
    assert list(SEED004_REFERENCES) == [line for line in tail if line.strip()]


# ----------------------------------------------------------------------------- every proof supports its verdict
@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_proof_supports_the_verdict(results, claim):
    """passed means: the evidence supports the claim's verdict (see ProofResult)."""
    result = results[claim.id]
    assert isinstance(result, ProofResult) and result.claim_id == claim.id
    assert result.passed, f"{claim.id} ({claim.verdict}): {result.summary} {result.numbers}"
    assert result.summary.strip() and "{" not in result.summary
    json.dumps(result.numbers)                           # plain values only
    assert "error" not in result.numbers


def test_run_all_returns_every_claim_in_order_and_counts_them(results):
    assert list(results) == [c.id for c in CLAIMS]
    counts = result_counts(results)
    assert {v: n["claims"] for v, n in counts.items()} == claim_counts()
    assert all(n["supported"] == n["claims"] for n in counts.values())


def test_run_all_reports_a_proof_that_raises_instead_of_stopping(monkeypatch):
    claim = get_claim("004-same-range")

    def broken():
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(claims, "CLAIMS", (claim,))
    monkeypatch.setattr(claims, claim.proof, broken)
    out = run_all(progress=False)
    assert not out[claim.id].passed and "deliberately broken" in out[claim.id].numbers["error"]


def test_run_proof_leaves_threads_and_random_state_alone():
    torch.set_num_threads(1)
    torch.manual_seed(123)
    np.random.seed(7)
    expected_torch, expected_numpy = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(7)
    torch.set_num_threads(2)
    try:
        run_proof("000-learnable-offsets")
        assert torch.get_num_threads() == 2
        assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_numpy)
    finally:
        torch.set_num_threads(1)


def test_a_proof_can_fail_when_its_evidence_changes(monkeypatch):
    """The proofs measure: give the additive-gamma proof the correct formula and it no longer
    finds the stuck standard deviation it reports for the seed's."""
    from bnlab import mistakes

    def correct(x, gamma, beta, eps=1e-5):
        return F.batch_norm(torch.as_tensor(x), None, None, torch.as_tensor(gamma, dtype=torch.float64),
                            torch.as_tensor(beta, dtype=torch.float64), training=True, eps=eps).numpy()

    assert run_proof("000-additive-gamma").passed
    monkeypatch.setattr(mistakes, "additive_affine", correct)
    assert not run_proof("000-additive-gamma").passed


# ----------------------------------------------------------------------------- the TensorFlow stand-in
def test_stand_in_has_the_real_names_and_not_the_invented_one():
    tf = tf_stand_in()
    for name in TF_API:
        assert claims._tf_resolves(tf, name), name
    assert not claims._tf_resolves(tf, "tf.reduce_variance")
    assert claims._tf_names("m = tf.reduce_mean(x)\nv = tf.math.reduce_variance(x)") == ["tf.reduce_mean",
                                                                                      "tf.math.reduce_variance"]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_stand_in_moments_and_batch_normalization_match_torch(dtype, tol):
    tf = tf_stand_in()
    x = torch.randn(8, 5, 5, 3, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3 + 2
    mean, var = tf.nn.moments(x, axes=[0, 1, 2])                 # Keras's BN(axis=-1): keep the channels
    gamma = torch.tensor([0.5, 1.0, 2.0], dtype=dtype)
    beta = torch.tensor([1.0, 0.0, -1.0], dtype=dtype)
    ours = tf.nn.batch_normalization(x, mean, var, offset=beta, scale=gamma, variance_epsilon=1e-3)
    theirs = F.batch_norm(x.permute(0, 3, 1, 2), None, None, gamma, beta, training=True, eps=1e-3).permute(0, 2, 3, 1)
    assert (ours - theirs).abs().max() <= tol * max(1.0, theirs.abs().max().item())
    with pytest.raises(TypeError, match="train"):
        tf.nn.batch_normalization(x, mean, var, offset=beta, scale=gamma, variance_epsilon=1e-3, train=True)
    with pytest.raises(ValueError, match="expected 3, got 2"):
        mean, var, shape = tf.nn.moments(x, axes=[0, 1, 2])


def test_stand_in_batch_normalization_gradcheck():
    tf = tf_stand_in()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    gamma = torch.rand(4, dtype=torch.float64, generator=gen).add(0.5).requires_grad_()
    beta = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)

    def layer(x, gamma, beta):
        mean, var = tf.nn.moments(x, axes=[0])
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-3)

    assert torch.autograd.gradcheck(layer, (x, gamma, beta))


def test_seed_listings_run_as_the_transliterations_in_mistakes():
    """The verbatim listings, exec'd, compute what bnlab.mistakes' line-by-line copies compute."""
    from bnlab.mistakes import Seed002BNLayer, Seed003BatchNormalization

    x = torch.randn(4, 16, 16, 16, generator=torch.Generator().manual_seed(0))      # H == C: gamma broadcasts
    listing = claims._seed002_layer(fix_reduce_variance=True)()(x)
    copy002 = Seed002BNLayer(epsilon=1e-3)(x)
    assert (listing - copy002).abs().max() < 1e-5
    module = claims._run_listing(claims.SEED003_MODULE, "BatchNormalization", {"torch": torch, "nn": torch.nn})(6)
    flat = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    assert (module(flat) - Seed003BatchNormalization(6)(flat)).abs().max() == 0


def test_flop_count_of_a_convolution_and_its_bn():
    layer = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8))
    counts = claims._flops(layer, torch.zeros(1, 4, 5, 5))
    assert counts == {"conv": 2 * 4 * 9 * 8 * 25, "bn": claims.BN_FLOPS_PER_VALUE * 8 * 25}


# ----------------------------------------------------------------------------- the citation check
def test_check_references_accepts_a_correct_entry_and_names_each_mistake():
    right = SEED004_REFERENCES[0]
    assert check_references([right])["correct"] == [1]
    wrong_author = right.replace("Szegedy, C.", "Hinton, G.")
    problems = check_references([wrong_author])["problems"][1]
    assert any("not authors: Hinton, G." in p for p in problems) and any("left out: Szegedy, C." in p for p in problems)
    wrong_initial = check_references([right.replace("Ioffe, S.", "Ioffe, M.")])["problems"][1]
    assert wrong_initial == ["Ioffe, M. should be Ioffe, S."]
    wrong_id = check_references([right.replace("1502.03167", "1502.03168")])["problems"][1]
    assert len(wrong_id) == 1 and "the paper's is arXiv:1502.03167" in wrong_id[0]
    wrong_year = check_references([right.replace("(2015)", "(2014)")])["problems"][1]
    assert wrong_year == ["year 2014, not 2015"]


def test_check_references_counts_repeats_cut_off_and_unknown_entries():
    entries = [SEED004_REFERENCES[0], "2. Nobody, A. (2020). A Paper Nobody Wrote. arXiv preprint arXiv:2001.00001.",
               "3." + SEED004_REFERENCES[0].split(".", 1)[1], "4. Ioffe, S., & Szegedy, C. (2015). Batch"]
    report = check_references(entries)
    assert report["entries"] == 4 and report["distinct"] == 2 and report["works"] == 2
    assert report["repeats"] == {3: 1} and report["cut_off"] == [4] and report["unverified"] == [2]
    assert report["correct"] == [1]


def test_the_two_deep_learning_titles_are_told_apart_by_their_first_author():
    book, paper = SEED004_REFERENCES[5], SEED004_REFERENCES[6]
    assert "MIT Press" in book and "Nature" in paper
    assert check_references([book, paper])["correct"] == [6, 7]
    assert CITATIONS["goodfellow2016"].title == CITATIONS["lecun2015"].title == "Deep Learning"


def test_claims_markdown_quotes_every_claim_of_the_seed_with_its_verdict_and_proof():
    from bnlab.claims import CLAIMS, ProofResult, claims_markdown

    mine = [c for c in CLAIMS if c.seed == "003"]
    results = {c.id: ProofResult(c.id, True, {"x": 1.0}, f"measured {c.id}") for c in mine}
    text = claims_markdown("003", results)
    for c in mine:
        assert f"**{c.id}**" in text and c.quote_en in text and f"**{c.verdict}.**" in text
        assert f"Proof: measured {c.id}" in text
    assert not any(f"**{c.id}**" in text for c in CLAIMS if c.seed != "003")
    with pytest.raises(ValueError, match="seed"):
        claims_markdown("005")


def test_evidence_items_flatten_the_numbers_and_feed_the_explorer():
    from bnlab.claims import CLAIMS, ProofResult, evidence_items
    from bnlab.widgets import EvidenceExplorer

    results = {c.id: ProofResult(c.id, i % 2 == 0, {"a": 1.5, "b": {"c": 2, "d": [3.0, True]}, "s": "text"}, "x")
               for i, c in enumerate(CLAIMS)}
    items = evidence_items(results)
    assert [item["id"] for item in items] == [c.id for c in CLAIMS]
    assert items[0]["numbers"] == {"a": 1.5, "b.c": 2.0, "b.d[0]": 3.0}
    assert items[1]["passed"] is False
    EvidenceExplorer(items)          # raises on any item it cannot show
