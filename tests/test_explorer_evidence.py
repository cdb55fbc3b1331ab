"""EvidenceExplorer (lesson 13) sends every claim once; its view picks, filters and draws them
(tests/js/evidence_explorer.test.mjs). Expected values here come from the claims themselves, numpy
and Python's format, never from what the explorer computed."""

import collections
import json
import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bnlab import widgets  # noqa: E402
from bnlab.widgets import MAX_PAYLOAD_BYTES, EvidenceExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from evidence_explorer_fixtures import claim, many_items, sample_items  # noqa: E402
from figure_testing import assert_inside  # noqa: E402

# the colours the course gives each verdict (the lesson's legend names them)
VERDICT_COLORS = {"false": "#d62728", "half-true": "#ff7f0e", "true": "#2ca02c", "untestable as stated": "#7f7f7f"}


@pytest.fixture(scope="module")
def explorer():
    return EvidenceExplorer(sample_items())


def test_sends_every_claim_once_numbers_in_order_and_json_safe(explorer):
    items = sample_items()
    sent = explorer.data
    assert [c["id"] for c in sent["items"]] == [c["id"] for c in items]
    for s, c in zip(sent["items"], items):
        assert {k: v for k, v in s.items() if k != "numbers"} == {k: v for k, v in c.items() if k != "numbers"}
        assert [name for name, _ in s["numbers"]] == list(c["numbers"])
        for (_, v), original in zip(s["numbers"], c["numbers"].values()):
            if math.isfinite(original):
                assert v == original and isinstance(v, float) and (v != 0 or math.copysign(1, v) == 1)  # -0.0: 0
            else:
                assert v == {"nan": "nan", "inf": "inf", "-inf": "-inf"}[str(original)]
    assert sent["verdict_colors"] == VERDICT_COLORS
    assert sent["verdicts"] == ["true", "false", "half-true", "untestable as stated"]
    assert sent["filters"] == {"all": None, "true": "true", "false": "false", "half-true": "half-true",
                               "untestable": "untestable as stated"}
    assert sent["initial"] == {"item": "s002-ics", "filter": "all"}
    assert explorer.payload_bytes == len(json.dumps(sent, separators=(",", ":"), allow_nan=False))
    assert "export default" in bundle(EvidenceExplorer.VIEW) and "EvidenceExplorer" in widgets.__all__
    assert repr(explorer) == repr(EvidenceExplorer(items[:1])) and "0x" not in repr(explorer)


def test_the_filter_offers_only_verdicts_some_claim_has():
    e = EvidenceExplorer([claim("a", "false"), claim("b", "true"), claim("c", "false")], item="c")
    assert list(e.data["filters"]) == ["all", "true", "false"]
    assert e.initial == {"item": "c", "filter": "all"}
    assert e.filtered("false") == ["a", "c"] and e.filtered("all") == ["a", "b", "c"]
    assert e.filtered("half-true") == []


def test_sixty_lesson_sized_claims_send_under_300_kb():
    items = many_items(60)
    e = EvidenceExplorer(items)
    text = sum(len(c[k]) for c in items for k in ("quote", "translation", "explanation", "summary"))
    assert text > 60 * 800                 # the claims carry lesson-sized texts
    assert e.payload_bytes < 300_000 < MAX_PAYLOAD_BYTES, e.payload_bytes


def test_counts_and_filters_are_the_claims(explorer):
    items = sample_items()
    counted = collections.Counter(c["verdict"] for c in items)
    assert explorer.counts() == {v: counted[v] for v in ("true", "false", "half-true", "untestable as stated")}
    supported = sum(c["passed"] for c in items)
    assert explorer.counts_line() == (f"all {len(items)} claims: {counted['true']} true, {counted['false']} false, "
                                      f"{counted['half-true']} half-true, {counted['untestable as stated']} untestable "
                                      f"as stated; the evidence supports {supported} of the {len(items)} verdicts")
    assert EvidenceExplorer([claim("x")]).counts_line() == ("all 1 claim: 0 true, 1 false, 0 half-true, 0 untestable "
                                                            "as stated; the evidence supports 1 of the 1 verdict")
    for label, verdict in (("true", "true"), ("untestable", "untestable as stated"), ("half-true", "half-true")):
        assert explorer.filtered(label) == [c["id"] for c in items if c["verdict"] == verdict]
    with pytest.raises(ValueError, match="filter must be one of"):
        explorer.filtered("mostly true")


def test_labels_cut_the_translation_or_explanation_at_60_characters(explorer):
    items = {c["id"]: c for c in sample_items()}
    long = items["s002-ics"]["translation"]
    assert len(long) > 60 and explorer.label("s002-ics") == f"s002-ics — {long[:60]}…"
    assert explorer.label("s003-lr") == "s003-lr — BN allows larger learning rates."
    # no translation: the explanation's start
    assert explorer.label("beyond-off-only") == "beyond-off-only — " + "x" * 60 + "…"
    assert explorer.label("s004-rtl") == "s004-rtl — In eval mode BN uses fixed statistics."
    assert EvidenceExplorer([claim("z", explanation="")]).label("z") == "z"


def test_bars_are_log10_of_the_finite_nonzero_numbers_largest_first(explorer):
    for c in sample_items():
        names = list(c["numbers"])
        values = np.array(list(c["numbers"].values()), dtype=np.float64)
        drawable = np.isfinite(values) & (values != 0)
        logs = np.log10(np.abs(values[drawable]))
        # largest first; among equal sizes the earlier number first
        order = np.lexsort((np.flatnonzero(drawable), -logs))
        expected = [(np.array(names)[drawable][i], logs[i]) for i in order]
        bars = explorer.bars(c["id"])
        assert [n for n, _ in bars] == [n for n, _ in expected], c["id"]
        np.testing.assert_allclose([b for _, b in bars], [b for _, b in expected], rtol=1e-15)
        assert [n for n, _ in explorer.off_axis(c["id"])] == [n for n, d in zip(names, drawable) if not d]
        lo, hi = explorer.limits(c["id"])
        ends = [0.0, *logs]
        span = max(max(ends) - min(ends), 1.0)
        assert (lo, hi) == pytest.approx((min(ends) - span / 4, max(ends) + span / 4), rel=1e-14, abs=1e-14)
    assert [n for n, _ in explorer.bars("s003-lr")] == ["max stable lr", "equal size", "2", "10"]


def test_titles_state_the_claim_its_verdict_and_the_evidence(explorer):
    assert explorer.title("s002-ics") == "s002-ics: false (the evidence supports this verdict)"
    assert explorer.title("s005-count") == "s005-count: true (the evidence does not support this verdict)"
    assert explorer.title("beyond-empty") == "beyond-empty: untestable as stated (the evidence supports this verdict)"


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("summary"), r"items\[1\] \('b'\): missing keys \['summary'\]"),
    (lambda c: c.update(verdcit="true"), r"unknown keys \['verdcit'\]"),
    (lambda c: c.update(verdict="mostly true"), "verdict must be one of"),
    (lambda c: c.update(verdict="untestable"), "verdict must be one of"),
    (lambda c: c.update(id="a"), r"claim ids must be unique; repeated: \['a'\]"),
    (lambda c: c.update(id=" "), "id must not be empty"),
    (lambda c: c.update(id=3), "id must be a str"),
    (lambda c: c.update(quote=None), "quote must be a str"),
    (lambda c: c.update(passed="yes"), "passed must be True or False"),
    (lambda c: c.update(passed=1), "passed must be True or False"),
    (lambda c: c.update(numbers=[1.0]), "numbers must be a dict"),
    (lambda c: c.update(numbers={"lr": "0.1"}), r"numbers\['lr'\] must be a number"),
    (lambda c: c.update(numbers={"lr": None}), r"numbers\['lr'\] must be a number"),
    (lambda c: c.update(numbers={"ok": True}), r"numbers\['ok'\] must be a number"),
    (lambda c: c.update(numbers={"lr": [0.1, 0.2]}), r"numbers\['lr'\] must be a number"),
    (lambda c: c.update(numbers={1: 0.1}), "numbers' names must be str"),
])
def test_bad_claims_are_named(change, message):
    items = [claim("a"), claim("b")]
    change(items[1])
    with pytest.raises(ValueError, match=message):
        EvidenceExplorer(items)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="items is empty"):
        EvidenceExplorer([])
    with pytest.raises(ValueError, match="items must be a list of claim dicts"):
        EvidenceExplorer(claim("a"))
    with pytest.raises(ValueError, match=r"items\[0\] must be a dict"):
        EvidenceExplorer(["a"])
    with pytest.raises(ValueError, match="item must be the id of one of the claims, got 'b'"):
        EvidenceExplorer([claim("a")], item="b")
    with pytest.raises(ValueError, match="no claim with id 'b'"):
        EvidenceExplorer([claim("a")]).bars("b")
    # numpy numbers are numbers; the items are copied, not kept
    items = [claim("a", numbers={"n": np.int64(3), "x": np.float32(0.5)}, passed=np.bool_(False))]
    e = EvidenceExplorer(items)
    items[0]["numbers"]["n"] = 4
    assert e.claim("a")["numbers"] == {"n": 3.0, "x": 0.5} and e.claim("a")["passed"] is False


def test_figure_draws_the_same_bars_text_and_title(explorer):
    fig = explorer.figure("beyond-odd")
    text_ax, ax = fig.axes
    bars = explorer.bars("beyond-odd")
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths, [b for _, b in bars], rtol=1e-15)
    assert [p.get_y() + p.get_height() / 2 for p in ax.patches] == pytest.approx(range(len(bars) - 1, -1, -1))
    assert {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches} == {VERDICT_COLORS["false"]}
    assert [t.get_text() for t in ax.get_yticklabels()] == [n for n, _ in bars]
    assert ax.get_xlim() == pytest.approx(explorer.limits("beyond-odd"))
    assert fig._suptitle.get_text() == explorer.title("beyond-odd")
    assert ax.get_title().replace("\n", " ") == ("not on the log axis: nan loss = nan, overflow = inf, "
                                                "underflow = -inf, zero = 0, minus zero = 0")
    values = {t.get_text().strip() for t in ax.texts}
    assert {"1.234e+04", "1.062", "3.5e+300", "-2.5e-300", "1"} <= values
    written = " ".join(t.get_text().replace("\n", " ") for t in text_ax.texts)
    c = next(c for c in sample_items() if c["id"] == "beyond-odd")
    assert " ".join(c["explanation"].split()) in " ".join(written.split())
    assert "✗ the evidence does not support the verdict" in written and explorer.counts_line() in " ".join(
        written.split())
    badge = next(t for t in text_ax.texts if t.get_text() == "false")
    assert matplotlib.colors.to_hex(badge.get_bbox_patch().get_facecolor()) == VERDICT_COLORS["false"]
    assert_inside(fig, "beyond-odd")


def test_figure_of_claims_without_bars_says_why(explorer):
    empty = explorer.figure("beyond-empty")
    assert empty.axes[1].texts[0].get_text() == "this claim's proof records no numbers"
    off = explorer.figure("beyond-off-only")
    assert off.axes[1].texts[0].get_text().replace("\n", " ") == "no number has a finite log10 |value|: a = nan, b = 0"
    first = explorer.figure()
    assert first._suptitle.get_text() == explorer.title("s002-ics")
    for item in ("s002-ics", "s003-lr", "beyond-empty"):
        assert_inside(explorer.figure(item), item)
    assert_inside(EvidenceExplorer(many_items(2)).figure(), "many")


@pytest.mark.filterwarnings("error::UserWarning")   # a glyph missing from the font warns at draw time
def test_figure_leaves_quotes_it_cannot_draw_to_the_live_view(explorer):
    def written(item):
        fig = explorer.figure(item)
        assert_inside(fig, item)
        return " ".join(" ".join(t.get_text().split()) for t in fig.axes[0].texts)

    assert "“Batch-Normalisierung reduziert den internen Kovariatenshift.”" in written("s002-ics")
    for item in ("s003-lr", "s004-rtl"):     # Chinese; Arabic, right to left
        text = written(item)
        assert "is in the live explorer" in text and next(c for c in sample_items() if c["id"] == item)[
            "translation"].split()[0] in text
