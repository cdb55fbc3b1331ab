import assert from "node:assert/strict";
import { test } from "node:test";

import view, {
  barPositions, gatesCaption, sequenceAt, sequenceReadout, sequenceTitle, stepOutline, varianceLimit,
} from "../../bnlab/static/sequence_explorer.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { data, cases, one_unit: oneUnit } = fixtures.sequence_explorer;
const NUMBERS = ["raw_mean", "raw_var", "bn_mean", "bn_var", "running_mean", "running_var", "pooled_mean",
                 "pooled_var", "rms_step", "rms_shared"];
const camel = (name) => name.replace(/_(\w)/g, (_, c) => c.toUpperCase());

test("each step and variant picks the records SequenceExplorer.at_step gives", () => {
  for (const [d, all] of [[data, cases], [oneUnit.data, oneUnit.cases]]) {
    for (const c of all) {
      const s = sequenceAt(d, { step: c.step, variant: c.variant });
      const what = `step ${c.step} ${c.variant}`;
      assertClose(s.rawHist, c.raw_hist, { what: `${what} raw histogram` });
      assertClose(s.stepHist, c.step_hist, { what: `${what} x̂ histogram` });
      assertClose(s.sharedHist, c.shared_hist, { what: `${what} pooled x̂ histogram` });
      for (const name of NUMBERS) assertClose(s[camel(name)], c[name], { what: `${what} ${name}` });
      assert.equal(s.statsStep, c.stats_step, what);
      assert.equal(s.beyond, c.beyond, what);
    }
  }
  assert.ok(cases.some((c) => c.beyond) && cases.some((c) => !c.beyond), "steps on both sides of max_steps");
  assert.throws(() => sequenceAt(data, { step: data.steps, variant: "plain" }), /is not a time step/);
  assert.throws(() => sequenceAt(data, { step: 1, variant: "gn" }), /variant gn/);
});

test("the title and readout say what Python's would", () => {
  for (const [d, all] of [[data, cases], [oneUnit.data, oneUnit.cases]]) {
    for (const c of all) {
      const s = sequenceAt(d, { step: c.step, variant: c.variant });
      assert.equal(sequenceTitle(d, s), c.title);
      assert.equal(sequenceReadout(d, s), c.readout);
    }
  }
  assert.equal(gatesCaption(oneUnit.data), "unit 1, gates i, f, g, o");
  assert.equal(gatesCaption(data), `all ${data.hidden_size} units, gates i, f, g, o`);
});

test("outlines, bar positions and the variance scale", () => {
  assert.deepEqual(stepOutline([0, 1, 3], [0.25, 0.75]), { xs: [0, 1, 1, 3], ys: [0.25, 0.25, 0.75, 0.75] });
  const { width, positions } = barPositions(data);
  const keys = Object.keys(data.metrics);
  assertClose(width, 0.8 / keys.length);
  // each test set's bars side by side, centred on it
  data.tests.forEach((_, g) => {
    const xs = keys.map((k) => positions[k][g]);
    assertClose(xs.reduce((a, b) => a + b, 0) / xs.length, g, { atol: 1e-12 });
    xs.slice(1).forEach((x, j) => assertClose(x - xs[j], width, { atol: 1e-12 }));
  });
  for (const [key, limit] of Object.entries(fixtures.sequence_explorer.variance_limits)) {
    assertClose(varianceLimit(data, key), limit, { what: `variance scale with ${key}` });
  }
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "SequenceExplorer");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 100, "the figure is drawn");
  const at = (step, variant) => cases.find((c) => c.step === step && c.variant === variant);
  const first = at(data.initial.step, data.initial.variant);
  for (const text of [first.title, "time step t", "fraction of values per bin", data.metric, ...data.tests,
                      data.chance_label, data.labels.bn]) {
    assert.ok(canvas.ctx.texts.includes(text), `${text} is not written: ${canvas.ctx.texts.join(" | ")}`);
  }
  assert.equal(readout.innerHTML, first.readout);
  const main = control(root, "step");
  assert.ok("main" in main.dataset);
  main.value = String(data.steps - 1);
  main.dispatch("input");
  const variant = control(root, "variant");
  variant.value = data.labels.ln;
  variant.dispatch("change");
  assert.equal(root.dataset.draws, "3");
  const last = at(data.steps - 1, "ln");
  assert.equal(readout.innerHTML, last.readout);
  assert.ok(canvas.ctx.texts.includes(last.title), canvas.ctx.texts.join(" | "));
  assert.ok(!canvas.ctx.texts.some((t) => /undefined|NaN|null/.test(t)), canvas.ctx.texts.join(" | "));
  assert.ok(!/undefined|NaN|null/.test(readout.innerHTML), readout.innerHTML);
});

test("without test metrics the bar panel says so, and the readout has no metrics table", () => {
  const { canvas, readout } = renderView(view, oneUnit.data);
  assert.ok(canvas.ctx.texts.includes("no test metrics given"), canvas.ctx.texts.join(" | "));
  assert.equal((readout.innerHTML.match(/<table>/g) || []).length, 1);
});
