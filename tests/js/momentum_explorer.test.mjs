import assert from "node:assert/strict";
import { test } from "node:test";

import view, { momentumReadout, momentumRun } from "../../bnlab/static/momentum_explorer.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { lesson, short } = fixtures.momentum_explorer;

test("the running mean and its lag are MomentumExplorer.compute's and ramp_lag's", () => {
  for (const { data, cases } of [lesson, short]) {
    for (const c of cases) {
      const r = momentumRun(data, c.settings);
      const what = JSON.stringify(c.settings);
      assert.equal(r.batchMeans, data.batch_means[c.settings.kind]);
      assertClose(r.running, c.running, { rtol: 1e-12, atol: 1e-12, what: `running mean ${what}` });
      assert.equal(r.last, c.last);
      assertClose(r.lag, c.lag, { rtol: 1e-10, atol: 1e-12, what: `lag ${what}` });
      if (c.theory === null) assert.equal(r.theory, null);
      else assertClose(r.theory, c.theory, { rtol: 1e-12, what: `theory ${what}` });
    }
  }
});

test("for a ramp the lag matches the theory drift (1 - m) / m", () => {
  const r = momentumRun(lesson.data, { momentum: 0.1, kind: "ramp" });
  assert.ok(Math.abs(r.lag - 0.18) < 0.03, `lag ${r.lag}`);
  const slow = momentumRun(lesson.data, { momentum: 0.01, kind: "ramp" });
  assert.ok(slow.lag > 5 * r.lag);
  assert.throws(() => momentumRun(lesson.data, { momentum: 0.1, kind: "zigzag" }), /unknown drift "zigzag"/);
  assert.throws(() => momentumRun(lesson.data, { momentum: 2, kind: "ramp" }), /momentum must be in \[0, 1\]/);
});

test("the readout says what Python's would", () => {
  for (const { data, cases } of [lesson, short]) {
    for (const c of cases) {
      assert.equal(momentumReadout(momentumRun(data, c.settings), c.settings.momentum), c.readout);
    }
  }
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const data = lesson.data;
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "MomentumExplorer");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 100, "the figure is drawn");
  const written = () => canvas.ctx.texts;
  for (const text of ["batch mean", "true mean", "running_mean, momentum 0.1", "training step",
                      "mean of the feature (its units)", "A small momentum averages more, and lags further behind"]) {
    assert.ok(written().includes(text), `${text} is not written on the figure`);
  }
  assert.ok(!written().some((t) => /undefined|NaN/.test(t)), written().join(" | "));
  const main = control(root, "momentum");
  assert.ok("main" in main.dataset);
  assert.equal(10 ** Number(main.value), data.initial.momentum);
  const first = momentumRun(data, data.initial);
  assert.equal(readout.innerHTML, momentumReadout(first, data.initial.momentum));
  const kind = control(root, "kind");
  kind.value = "step";
  kind.dispatch("change");
  main.value = "-2";
  main.dispatch("input");
  assert.equal(root.dataset.draws, "3");
  assert.ok(written().includes("running_mean, momentum 0.01"), written().join(" | "));
  assert.equal(readout.innerHTML, momentumReadout(momentumRun(data, { momentum: 0.01, kind: "step" }), 0.01));
  assert.ok(!readout.innerHTML.includes("theory"), "the theory is for a ramp only");
});
