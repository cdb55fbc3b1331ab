import assert from "node:assert/strict";
import { test } from "node:test";

import {
  flowLegendCorner, flowLogRange, flowLogTicks, flowReadout, flowSelection, flowTitle,
} from "../../bnlab/static/gradient_flow_explorer.js";
import { assertClose, fixtures } from "./fixtures.mjs";

const f = fixtures.gradient_flow;

test("the selection picks the sent norms and runs of the settings, with their first / last ratio", () => {
  for (const c of f.cases) {
    const s = flowSelection(f.data, c.settings);
    for (const norm of ["plain", "bn"]) {
      assert.equal(s.grad[norm].length, c.settings.depth);
      // a norm JSON could not carry (null) is NaN in the view
      assert.deepEqual(s.grad[norm], c.grad[norm].map((g) => (g === null ? NaN : g)));
      if (c.ratio[norm] === null) assert.ok(!Number.isFinite(s.ratio[norm]) || s.ratio[norm] === 0);
      else assertClose(s.ratio[norm], c.ratio[norm], { rtol: 1e-12, atol: 0, what: "ratio" });
      assert.equal(s.trained[norm] !== null, c.trained[norm], `${JSON.stringify(c.settings)} ${norm} trained`);
    }
    assert.equal(s.complete, c.trained.plain && c.trained.bn);
  }
  assert.throws(() => flowSelection(f.data, { depth: 3, activation: "relu", init: "he", lr: 1 }), /no gradient norms/);
});

test("the title and the readout are the old explorer's, formatted as Python formats them", () => {
  for (const c of f.cases) {
    const s = flowSelection(f.data, c.settings);
    assert.equal(flowTitle(c.settings, s.ratio), c.title);
    assert.equal(flowReadout(f.data, s), c.readout);
  }
});

test("a log axis covers the positive finite norms and is labelled with round ticks", () => {
  const [lo, hi] = flowLogRange([1e-42, 3.1, 0, NaN, Infinity, 2e-3]);
  // padded by 8 % of the 42.5 decades spanned, on either side
  assertClose([Math.log10(lo), Math.log10(hi)], [-42 - 0.08 * 42.49, 0.4914 + 0.08 * 42.49], { rtol: 0, atol: 0.01, what: "range" });
  const [a, b] = flowLogRange([0.6, 0.9]);
  assert.ok(a < 0.6 && b > 0.9 && Math.log10(b / a) >= 1 - 1e-9, "a short range is widened to a decade");
  for (const [lo2, hi2] of [[lo, hi], [a, b], [0.3, 2.5], [1e-3, 1e3]]) {
    const ticks = flowLogTicks(lo2, hi2);
    assert.ok(ticks.length >= 2 && ticks.length <= 9, `${ticks.length} ticks on [${lo2}, ${hi2}]`);
    for (const t of ticks) {
      assert.ok(t.value >= lo2 * (1 - 1e-9) && t.value <= hi2 * (1 + 1e-9));
      const mantissa = t.value / 10 ** Math.floor(Math.log10(t.value) + 1e-9);
      assert.ok([1, 2, 5].some((m) => Math.abs(mantissa - m) < 1e-6), `tick ${t.value}`);
    }
  }
  assert.deepEqual(flowLogTicks(0.3, 2.5).map((t) => t.label), ["0.5", "1", "2"]);
  assert.deepEqual(flowLogTicks(1e-41, 100).map((t) => t.label), ["1e-40", "1e-30", "1e-20", "1e-10", "1"]);
});

test("the legend goes to the corner with the fewest points", () => {
  const rising = Array.from({ length: 20 }, (_, i) => [i / 19, i / 19]);
  assert.equal(flowLegendCorner(rising), "upper left");
  const high = Array.from({ length: 20 }, (_, i) => [i / 19, 0.9]);
  assert.ok(flowLegendCorner(high).startsWith("lower"));
});
