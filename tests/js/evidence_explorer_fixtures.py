"""EvidenceExplorer's claims and what its view must show of each, for tests/js/evidence_explorer.test.mjs:
the labels, bars, off-axis numbers, axis limits, titles, counts and filters from EvidenceExplorer's
methods (tests/test_explorer_evidence.py checks those against numpy and the items themselves), the
readout written here with Python's format, and Python's format(x, ".{p}g") of awkward numbers."""

import html
import math

import numpy as np

from bnlab.widgets import EvidenceExplorer


def claim(id, verdict="false", passed=True, numbers=None, **text) -> dict:
    """A claim with every key, plain text where not given."""
    return {"id": id, "source": text.get("source", "seed 002"), "quote": text.get("quote", ""),
            "translation": text.get("translation", ""), "verdict": verdict,
            "explanation": text.get("explanation", f"Why {id} is {verdict}."), "lesson": text.get("lesson", "03 §4"),
            "summary": text.get("summary", f"What the proof of {id} measured."), "passed": passed,
            "numbers": {} if numbers is None else numbers}


def sample_items() -> list[dict]:
    """Claims of every verdict and every awkward case: no quote or translation, a right-to-left and a
    CJK quote, HTML characters, whitespace runs, long texts, no numbers, NaN, inf, 0, -0.0, negative
    values, names Python keeps in order and an object would not ("10", "2"), equal sizes, exact ties
    of .4g (12345, 1.0625), and a value beyond float32."""
    return [
        claim("s002-ics", "false", True, {"ICS, with BN": 0.41, "ICS, without BN": 0.38, "test accuracy gain": 0.12},
              quote="Batch-Normalisierung reduziert den internen Kovariatenshift.",
              translation="Batch normalization reduces internal covariate shift, and that is why it works so well.",
              source="seed 002", lesson="09 §2"),
        claim("s003-lr", "half-true", True, {"10": 1e-3, "2": 3.0, "max stable lr": 30.0, "equal size": -30.0},
              quote="批归一化允许更大的学习率。", translation="BN allows   larger\nlearning rates.", source="seed 003"),
        claim("s004-rtl", "true", True, {"parity, float64": 2.3e-16, "parity, float32": 4.1e-7, "tolerance": 1e-5},
              quote="التطبيع الدفعي يعمل في وضع التقييم بإحصاءات ثابتة",
              translation="In eval mode BN uses fixed statistics.", source="seed 004", lesson="03 §1"),
        claim("beyond-empty", "untestable as stated", True, {}, explanation="“BN is magic” names no quantity a "
              "proof could measure: there is nothing to test.\nSo: untestable as stated.", source="beyond the seeds",
              lesson="13 §1", summary="Nothing measured."),
        claim("beyond-odd", "false", False,
              {"nan loss": math.nan, "overflow": math.inf, "underflow": -math.inf, "zero": 0.0, "minus zero": -0.0,
               "tie 12345": 12345.0, "tie 1.0625": 1.0625, "huge": 3.5e300, "tiny": -2.5e-300, "one": 1.0},
              explanation="Proof <b>&</b> 'quotes' \"too\": the evidence does not support it.",
              summary="x < y & z > w", source="beyond the seeds", lesson="10 §3 <draft>"),
        claim("beyond-off-only", "half-true", True, {"a": math.nan, "b": 0.0}, translation="",
              explanation="x" * 200),
        claim("s005-count", "true", False, {"steps": 3000, "int seed": 7}, translation="Short.", lesson="06 §2"),
    ]


def many_items(n: int = 60, seed: int = 0) -> list[dict]:
    """n claims of lesson-like length (a quote, its translation, an explanation of a few sentences,
    about 6 numbers), for the payload's size."""
    rng = np.random.default_rng(seed)
    verdicts = EvidenceExplorer.VERDICTS
    words = ("batch normalization running mean variance gradient learning rate eval mode train mode "
             "statistics momentum epsilon gamma beta layer channel the of and that with").split()

    def sentence(k):
        return " ".join(rng.choice(words, k)).capitalize() + "."

    return [claim(f"claim-{i:03d}", verdicts[i % 4], bool(rng.random() < 0.9),
                  {f"measured {j}": float(10.0 ** rng.uniform(-16, 4)) for j in range(6)},
                  quote=sentence(30), translation=sentence(30), explanation=" ".join(sentence(20) for _ in range(5)),
                  summary=sentence(25), source=f"seed {i % 9:03d}", lesson=f"{i % 13:02d} §{i % 5}")
            for i in range(n)]


def number(v: float):
    # as the explorer sends them: JSON has no NaN or inf
    return v if math.isfinite(v) else repr(v)


def readout(numbers: dict) -> str:
    if not numbers:
        return "<p>this claim's proof records no numbers</p>"

    def cell(c, right=True):
        return f"<td style='padding:0 10px{'; text-align:right' if right else ''}'>{c}</td>"

    head = "".join(f"<th style='padding:0 10px'>{h}</th>" for h in ("number", "value", "log10 |value|"))
    body = "".join(f"<tr>{cell(html.escape(name), False)}{cell(format(v, '.4g'))}"
                   f"{cell(format(math.log10(abs(v)), '.2f') if math.isfinite(v) and v != 0 else '–')}</tr>"
                   for name, v in numbers.items())
    return f"<table><tr>{head}</tr>{body}</table>"


def case_set(explorer: EvidenceExplorer) -> dict:
    return {"data": dict(explorer.data), "counts": explorer.counts(), "counts_line": explorer.counts_line(),
            "filtered": {label: explorer.filtered(label) for label in explorer.data["filters"]},
            "items": [{"id": c["id"], "label": explorer.label(c["id"]), "bars": explorer.bars(c["id"]),
                       "off_axis": [[name, number(v)] for name, v in explorer.off_axis(c["id"])],
                       "limits": list(explorer.limits(c["id"])), "title": explorer.title(c["id"]),
                       "readout": readout(c["numbers"])} for c in explorer.items]}


def format_g_cases() -> list:
    """[x or its repr, p, format(x, f'.{p}g')] for values where JavaScript's own rounding is not Python's."""
    values = [12345.0, 1.0625, 0.03125, 1234.5, 2.5, 0.5, 99995.0, 9.9995, 1e-5, 0.0001, 123456789.0, 1e16,
              -12345.0, -0.0, 0.0, 1.0, 3.5e300, -2.5e-300, 5e-324, 0.1 + 0.2, math.nan, math.inf, -math.inf, 7.0,
              3000.0, 1e4, 99.99, 999.95]
    return [[number(x), p, format(x, f".{p}g")] for x in values for p in (1, 2, 3, 4, 6)]


def fixtures() -> dict:
    sample = EvidenceExplorer(sample_items(), item="s003-lr")
    return {"evidence_explorer": {"sample": case_set(sample), "many": case_set(EvidenceExplorer(many_items())),
                                  "format_g": format_g_cases()}}
