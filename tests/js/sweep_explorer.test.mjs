import assert from "node:assert/strict";
import { test } from "node:test";

import { table } from "../../bnlab/static/explorer.js";
import {
  sweepAt, sweepCurves, sweepFinalsLimits, sweepLegend, sweepLegendLayout, sweepLimits, sweepLogTicks, sweepReadout,
} from "../../bnlab/static/sweep_explorer.js";
import { assertClose, fixtures } from "./fixtures.mjs";


test("each setting picks its runs: the curves and the readout's numbers are the Histories'", () => {
  for (const c of fixtures.sweep) {
    for (const s of c.settings) {
      const picked = sweepAt(c.data, s.index);
      assert.deepEqual(Object.keys(picked.runs), Object.keys(s.runs), c.name);
      for (const [key, expected] of Object.entries(s.runs)) {
        const run = picked.runs[key];
        const what = `${c.name}, setting ${s.index}, ${key}`;
        assert.equal(run.loss.length, expected.loss.length, what);
        expected.loss.forEach((v, i) => {
          if (v === null) assert.ok(Number.isNaN(run.loss[i]), `${what}: loss[${i}] is not finite`);
          else assertClose(run.loss[i], v, { rtol: 5e-4, what: `${what}: loss[${i}]` });
        });
        assertClose(run.accuracy, expected.accuracy, { rtol: 5e-6, what: `${what}: accuracy` });
        assert.deepEqual(run.eval_steps, expected.eval_steps);
        assert.equal(run.diverged_at, expected.diverged_at);
        assertClose(run.finalAccuracy, expected.accuracy.at(-1), { rtol: 5e-6, what });
      }
    }
  }
});

test("the finals over the sweep: mean and min-max over seeds, a band only where there are several", () => {
  for (const c of fixtures.sweep) {
    for (const s of c.settings) {
      const { finals } = sweepAt(c.data, s.index);
      for (const [key, expected] of Object.entries(s.finals)) {
        for (const part of ["mean", "min", "max"]) {
          assertClose(finals[key][part], expected[part], { rtol: 5e-6, what: `${c.name} ${key} ${part}` });
        }
        assert.equal(finals[key].spread, expected.spread, `${c.name} ${key}`);
      }
    }
  }
  assert.ok(fixtures.sweep.some((c) => Object.values(c.settings[0].finals).some((f) => f.spread)));
});

test("the axes' limits are matplotlib's autoscale of the same curves and finals", () => {
  for (const c of fixtures.sweep) {
    for (const s of c.settings) {
      const picked = sweepAt(c.data, s.index);
      for (const [quantity, expected] of Object.entries(s.curves)) {
        const r = sweepCurves(c.data, picked, quantity);
        const what = `${c.name}, setting ${s.index}, ${quantity}`;
        assertClose(r.xlim, expected.xlim, { rtol: 1e-9, atol: 1e-9, what: `${what} xlim` });
        // the loss is sent to 4 digits
        assertClose(r.ylim, expected.ylim, { rtol: 1e-3, what: `${what} ylim` });
      }
      const r = sweepFinalsLimits(c.data, picked);
      assertClose(r.xlim, s.sweep.xlim, { rtol: 1e-9, what: `${c.name} sweep xlim` });
      assertClose(r.ylim, s.sweep.ylim, { rtol: 1e-5, what: `${c.name} sweep ylim` });
      if (s.sweep.ticks) {
        const ticks = sweepLogTicks(...r.xlim, c.data.log_base).filter((t) => t >= r.xlim[0] && t <= r.xlim[1]);
        assertClose(ticks, s.sweep.ticks, { rtol: 1e-12, what: `${c.name} log ticks` });
      }
    }
  }
});

test("the readout is the table of each run's final accuracy and last loss, 'diverged' where it did", () => {
  let diverged = 0;
  for (const c of fixtures.sweep) {
    for (const s of c.settings) {
      const picked = sweepAt(c.data, s.index);
      assert.equal(sweepReadout(c.data, picked, s.index), table(s.readout.rows, s.readout.header));
      diverged += Object.values(s.readout.rows).filter((cells) => cells[1] === "diverged").length;
    }
  }
  assert.ok(diverged > 0);
});

test("the legend names the runs as plot_curves does, a diverged one with its step, then chance", () => {
  for (const c of fixtures.sweep) {
    for (const s of c.settings) {
      const items = sweepLegend(c.data, sweepAt(c.data, s.index));
      assert.deepEqual(items.map((it) => it.label), s.legend);
      const colours = items.filter((it) => it.label !== "chance").map((it) => it.color);
      assert.deepEqual(colours, c.data.variants.map((key) => c.data.colors[key]));
    }
  }
});

test("log limits pad by 5% of the decades; ticks are powers of the base", () => {
  const [lo, hi] = sweepLimits([2, 64], true);
  assertClose([Math.log2(lo), Math.log2(hi)], [1 - 0.25, 6 + 0.25], { rtol: 1e-12 });
  // a single finite positive value: one decade around it (the rest cannot sit on a log axis)
  assert.deepEqual(sweepLimits([NaN, 0, -1, 10], true), [10 ** 0.5, 10 ** 1.5]);
  assert.deepEqual(sweepLogTicks(1.7, 70, 2), [1, 2, 4, 8, 16, 32, 64, 128]);
  assert.deepEqual(sweepLogTicks(0.0022, 1.3, 10), [0.001, 0.01, 0.1, 1, 10]);
  assert.ok(sweepLogTicks(1e-9, 1e9, 10).length <= 8);
});

test("legend entries wrap onto a second line where they do not fit, each line centred", () => {
  const one = sweepLegendLayout([100, 50], 300, 20);
  assert.equal(one.lines, 1);
  assert.deepEqual(one.positions, [{ x: 65, line: 0 }, { x: 185, line: 0 }]);
  const two = sweepLegendLayout([200, 150, 50], 300, 20);
  assert.equal(two.lines, 2);
  assert.deepEqual(two.positions.map((p) => p.line), [0, 1, 1]);
  assert.equal(two.positions[0].x, 50);
  assert.equal(two.positions[1].x, (300 - 220) / 2);
});
