"""The explorers' JavaScript, tested by node's own test runner against numbers bnlab computes.

This writes fixtures.json (bnlab's results: BN forward and backward, running averages, histograms,
each explorer's per-move computations from tests/js/<view>_fixtures.py) and every explorer's bundle
into a temporary directory, then runs `node --test tests/js/`. Without node on the PATH the test is
skipped, except where BNLAB_REQUIRE_NODE=1 (CI) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bnlab import widgets
from bnlab.experiments import ramp_lag
from bnlab.plots import _hist_bins
from bnlab.reference import batchnorm_backward, batchnorm_forward, running_average

JS_TESTS = Path(__file__).resolve().parent / "js"


def explorer_classes():
    return [cls for cls in vars(widgets).values()
            if isinstance(cls, type) and issubclass(cls, widgets.Explorer) and cls.__dict__.get("VIEW")]


def core_fixtures() -> dict:
    rng = np.random.default_rng(1)
    forward, backward = [], []
    for n, gamma, beta, eps, loc, scale in ((2, 1.0, 0.0, 1e-5, 0.0, 1.0), (7, -2.0, 0.5, 1e-3, 40.0, 1e-3),
                                            (64, 0.3, -1.0, 1e-5, -3.0, 12.0)):
        x = loc + scale * rng.normal(size=n)
        y, cache = batchnorm_forward(x[:, None], np.array([gamma]), np.array([beta]), {"mode": "train", "eps": eps})
        forward.append({"x": x.tolist(), "gamma": gamma, "beta": beta, "eps": eps, "y": y[:, 0].tolist(),
                        "mu": float(x.mean()), "var": float(cache["var"].item())})
        dy = rng.normal(size=n)
        _, cache = batchnorm_forward(x[:, None], np.array([gamma]), np.array([0.0]), {"mode": "train", "eps": 1e-5})
        dx = batchnorm_backward(dy[:, None], cache)[0][:, 0]
        backward.append({"x": x.tolist(), "gamma": gamma, "dy": dy.tolist(), "dx": dx.tolist()})
    values = rng.normal(size=300).cumsum()
    running = [{"values": values.tolist(), "momentum": m, "initial": init,
                "expected": running_average(values, m, init).tolist()}
               for m, init in ((0.1, 0.0), (0.001, 2.0), (1.0, 0.0), (None, 0.0))]
    true = np.arange(300) * 0.02
    run = running_average(true + rng.normal(size=300) * 0.1, 0.05)
    steps = [0, 10, 20, 30, 40]
    asked = [-5, 0, 5, 10, 39, 40, 41, 1000]
    histograms = []
    for values, bins in ((rng.normal(size=500), 30), (np.full(5, 3.0), 30), (rng.exponential(size=64), 12)):
        edges = _hist_bins(values, bins)
        histograms.append({"values": values.tolist(), "bins": bins, "edges": edges.tolist(),
                           "counts": np.histogram(values, edges)[0].tolist()})
    format_g = [[x, p, format(x, f".{p}g")] for x in (0.0, 1.0, -2.5, 123456.0, 0.000123456, 1e-5, 3.14159, 99.95,
                                                    1e-12, -0.1, 1234.56, 12.0, 0.5, 2e-3)
                for p in (2, 3, 4)]
    return {"forward": forward, "backward": backward, "running": running,
            "ramp_lag": {"true": true.tolist(), "running": run.tolist(), "expected": ramp_lag(true, run, 100)},
            "record_index": [{"steps": steps, "steps_asked": asked,
                              "expected": np.clip(np.searchsorted(steps, asked, side="right") - 1, 0, 4).tolist()}],
            "histograms": histograms, "format_g": format_g}


def view_fixtures() -> dict:
    """What tests/js/<view>_fixtures.py compute, each under its view's name."""
    out = {}
    for path in sorted(JS_TESTS.glob("*_fixtures.py")):
        spec = importlib.util.spec_from_file_location(f"js_fixtures_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out.update(module.fixtures())
    return out


def test_every_explorer_has_its_javascript_tested():
    tested = {p.name.removesuffix(".test.mjs") for p in JS_TESTS.glob("*.test.mjs")}
    for cls in explorer_classes():
        assert cls.VIEW.removesuffix(".js") in tested, f"{cls.__name__}'s view {cls.VIEW} has no tests/js test"


def test_javascript(tmp_path):
    node = shutil.which("node")
    if node is None:
        if os.environ.get("BNLAB_REQUIRE_NODE") == "1":
            pytest.fail("node is not on the PATH (Debian: apt-get install nodejs)", pytrace=False)
        pytest.skip("node is not on the PATH: the explorers' JavaScript tests need Node >= 18")
    bundles = []
    for cls in explorer_classes():
        name = f"bundle_{cls.__name__}.mjs"
        (tmp_path / name).write_text(widgets.bundle(cls.VIEW), encoding="utf-8")
        bundles.append(name)
    fixtures = {**core_fixtures(), **view_fixtures(), "bundles": bundles}
    (tmp_path / "fixtures.json").write_text(json.dumps(fixtures), encoding="utf-8")
    tests = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    result = subprocess.run([node, "--test", *tests], env=dict(os.environ, BNLAB_JS_FIXTURES=str(tmp_path)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"node --test failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    assert "# fail 0" in result.stdout and "# pass" in result.stdout
