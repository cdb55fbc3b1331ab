import assert from "node:assert/strict";
import { test } from "node:test";

import {
  batchnormBackwardTerms, batchnormForward, formatG, histogram, histogramEdges, rampLag, recordIndex,
  runningAverage,
} from "../../bnlab/static/bn.js";
import { assertClose, fixtures } from "./fixtures.mjs";

test("BN forward matches bnlab.reference on the same batches", () => {
  for (const c of fixtures.forward) {
    const r = batchnormForward(c.x, c.gamma, c.beta, c.eps);
    assertClose(r.y, c.y, { rtol: 1e-12, atol: 1e-12, what: "y" });
    assertClose(r.mu, c.mu, { what: "mu" });
    assertClose(r.var, c.var, { rtol: 1e-12, what: "var" });
  }
});

test("BN backward terms add up to bnlab.reference's dx", () => {
  for (const c of fixtures.backward) {
    const f = batchnormForward(c.x, c.gamma, 0, 1e-5);
    const t = batchnormBackwardTerms(f.xHat, c.dy, c.gamma, f.invStd);
    assertClose(t.dx, c.dx, { rtol: 1e-10, atol: 1e-12, what: "dx" });
    // the own and mean terms cancel over the batch, and x_hat sums to zero
    const scale = Math.max(...t.dx.map(Math.abs));
    assert.ok(Math.abs(t.dx.reduce((s, v) => s + v, 0)) <= 1e-12 * scale * t.dx.length);
  }
  assert.throws(() => batchnormBackwardTerms([0, 1], [1], 1, 1), /dy has 1 values, x_hat has 2/);
});

test("running average matches bnlab.reference.running_average", () => {
  for (const c of fixtures.running) {
    assertClose(runningAverage(c.values, c.momentum, c.initial), c.expected, { rtol: 1e-12, what: `momentum ${c.momentum}` });
  }
  assert.throws(() => runningAverage([1, 2], 1.5), /momentum must be in \[0, 1\]/);
});

test("ramp lag matches bnlab.experiments.ramp_lag", () => {
  const c = fixtures.ramp_lag;
  assertClose(rampLag(c.true, c.running, 100), c.expected, { rtol: 1e-12, what: "lag" });
});

test("record index matches numpy.searchsorted (side right, minus one, clipped)", () => {
  for (const c of fixtures.record_index) {
    assert.deepEqual(c.steps_asked.map((s) => recordIndex(c.steps, s)), c.expected);
  }
});

test("histograms match numpy.histogram over plots' bins", () => {
  for (const c of fixtures.histograms) {
    const edges = histogramEdges(c.values, c.bins);
    assertClose(edges, c.edges, { rtol: 1e-12, atol: 1e-12, what: "edges" });
    assert.deepEqual(histogram(c.values, edges), c.counts);
  }
});

test("formatG writes numbers as Python's format(x, '.Ng')", () => {
  for (const [x, p, expected] of fixtures.format_g) assert.equal(formatG(x, p), expected, `format(${x}, '.${p}g')`);
});
