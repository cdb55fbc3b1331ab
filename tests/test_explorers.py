"""What the browser explorers send, and how they are bundled: the framework of bnlab.widgets and
lesson 01's playground. (Each explorer's per-move JavaScript is tested in tests/js/ by node.)"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab import plots, widgets
from bnlab.data import base_sample
from bnlab.widgets import MAX_PAYLOAD_BYTES, Explorer, ForwardPlayground, bundle, rounded


def test_bundle_joins_the_library_and_a_view_into_one_module():
    code = bundle("forward_playground.js")
    # the library is inlined, its exports are plain declarations, and only the view's default export is left
    assert "function batchnormForward(" in code and "class Figure" in code
    assert "export function" not in code and "import {" not in code
    assert code.count("export default") == 1
    for cdn in ("http://", "https://", "cdn."):
        assert cdn not in code


def test_bundle_refuses_unknown_views_and_foreign_imports(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no explorer view 'nope.js'"):
        bundle("nope.js")
    monkeypatch.setattr(widgets, "STATIC", tmp_path)
    for name in widgets.LIBRARY:
        (tmp_path / name).write_text("export function f_" + name[:2] + "() {}\n")
    (tmp_path / "v.js").write_text('import { x } from "./other.js";\nexport default { render() {} };\n')
    with pytest.raises(ValueError, match="imports 'other.js'"):
        bundle("v.js")
    (tmp_path / "w.js").write_text('import * as d3 from "https://cdn.example/d3.js";\nexport default {};\n')
    with pytest.raises(ValueError, match="cannot be bundled"):
        bundle("w.js")
    (tmp_path / "u.js").write_text("function render() {}\n")
    with pytest.raises(ValueError, match="must end in `export default"):
        bundle("u.js")


def test_rounded_keeps_significant_digits_and_turns_non_finite_into_none():
    assert rounded([123456.789, 0.000123456789, -1.0, 0.0], 4) == [123500.0, 0.0001235, -1.0, 0.0]
    assert rounded([[1.23456, np.nan], [np.inf, 2.0]], 3) == [[1.23, None], [None, 2.0]]
    values = np.random.default_rng(0).normal(size=1000) * 10.0 ** np.random.default_rng(1).integers(-8, 8, 1000)
    np.testing.assert_allclose(rounded(values, 5), values, rtol=5e-5)


class Tiny(Explorer):
    VIEW = "forward_playground.js"


def test_an_explorer_refuses_to_send_more_than_a_megabyte():
    with pytest.raises(ValueError, match="would send .* bytes, more than 1,000,000"):
        Tiny({"values": [0.123456789] * (MAX_PAYLOAD_BYTES // 10)})
    tiny = Tiny({"values": [1.0, 2.0]})
    # sent as one compact JSON text, which the notebook saves as one string
    assert tiny._payload == '{"values":[1.0,2.0]}' and tiny.payload_bytes == 20
    tiny.data = {"values": [3.0]}
    assert tiny._payload == '{"values":[3.0]}'
    with pytest.raises(ValueError, match="would send"):
        tiny.data = {"values": [0.123456789] * (MAX_PAYLOAD_BYTES // 10)}
    assert tiny._payload == '{"values":[3.0]}'   # refused, so nothing was sent
    with pytest.raises(ValueError, match="nothing to train"):
        tiny.train_selected()


def test_an_explorer_has_a_stable_text_repr_for_pages_without_javascript():
    # nbval compares text/plain; anywidget's default repr holds an object address
    a, b = ForwardPlayground(), ForwardPlayground()
    assert repr(a) == repr(b) and "0x" not in repr(a)
    data, _ = a._repr_mimebundle_()
    assert data["text/plain"] == repr(a) and "application/vnd.jupyter.widget-view+json" in data


def test_explorer_javascript_ships_inside_the_package():
    for cls in (ForwardPlayground,):
        assert cls._esm == bundle(cls.VIEW)
        assert (widgets.STATIC / cls.VIEW).is_file()


def test_forward_playground_sends_its_fixed_samples_once_and_exactly():
    p = ForwardPlayground(seed=3)
    data = p.data
    assert set(data["samples"]) == {"normal", "skewed", "bimodal"}
    for shape, z in data["samples"].items():
        # exact float64 values: the view's BN must give the numbers compute() gives
        np.testing.assert_array_equal(np.array(z), base_sample(shape, 512, 3))
    assert data["initial"] == ForwardPlayground.INITIAL
    assert data["colors"]["plain"] == plots.COLORS["plain"] and data["colors"]["bn"] == plots.COLORS["bn"]
    assert p.payload_bytes < 60_000


def test_forward_playground_computes_what_torch_batchnorm_computes():
    p = ForwardPlayground()
    v = {**p.initial, "mean": -20.0, "scale": 0.01, "batch_size": 9, "gamma": -2.0, "beta": 0.5, "eps": 1e-3,
         "shape": "bimodal"}
    x, y, mu, var = p.compute(**v)
    np.testing.assert_array_equal(x, -20.0 + 0.01 * p.samples["bimodal"][:9])
    expected = F.batch_norm(torch.tensor(x)[:, None], None, None, torch.tensor([-2.0], dtype=torch.float64),
                            torch.tensor([0.5], dtype=torch.float64), training=True, eps=1e-3)
    np.testing.assert_allclose(y, expected[:, 0].numpy(), rtol=1e-10, atol=1e-12)
    assert mu == pytest.approx(x.mean()) and var == pytest.approx(x.var())


def test_forward_playground_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown settings \\['gama'\\]"):
        ForwardPlayground(gama=2.0)
    p = ForwardPlayground()
    with pytest.raises(ValueError, match="shape must be one of"):
        p.compute(**{**p.initial, "shape": "uniform"})
    with pytest.raises(ValueError, match="batch_size must be in 2..512"):
        p.compute(**{**p.initial, "batch_size": 1})


def test_forward_playground_snapshot_draws_the_first_picture_from_the_same_sample():
    p = ForwardPlayground(batch_size=100, gamma=2.0, beta=1.0)
    fig = p.figure()
    before, after = fig.axes[:2]
    heights = np.array([patch.get_height() for patch in before.patches])
    assert heights.sum() == 100   # a histogram of the batch, one count per value
    assert "std ≈ |γ| = 2.00" in fig._suptitle.get_text() and "β = 1.00" in fig._suptitle.get_text()
    x, y, _, _ = p.compute(**p.initial)
    assert after.get_title() == f"output y: std {y.std():.2f}"


def test_snapshot_shows_a_png_and_the_figures_repr_whatever_the_backend(monkeypatch):
    """A lesson's first picture may be a snapshot, before pyplot has drawn anything: the PNG must
    not depend on IPython's inline backend being set up."""
    import bnlab.widgets as W

    shown = []
    monkeypatch.setattr(W, "display", lambda obj, raw=False: shown.append((obj, raw)))
    explorer = W.ShardExplorer()
    explorer.snapshot()
    (bundle, raw), = shown
    assert raw and bundle["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert bundle["text/plain"].startswith("<Figure size ")
