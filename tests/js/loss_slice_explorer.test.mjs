import assert from "node:assert/strict";
import { test } from "node:test";

import view, { sliceAt, sliceReadout, sliceTitle } from "../../bnlab/static/loss_slice_explorer.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { data, cases, only_bn, flipped } = fixtures.loss_slice_explorer;

test("the slice at a step: each variant's loss range and loss at the nearest recorded k", () => {
  for (const c of cases) {
    const s = sliceAt(data, c.settings);
    const what = JSON.stringify(c.settings);
    assert.equal(s.index, c.index, what);
    assert.equal(s.kIndex, c.k_index, what);
    assert.equal(s.k, c.k_chosen, what);
    for (const key of data.variants) {
      assertClose(s.variants[key].range, c.ranges[key], { rtol: 1e-5, atol: 2e-5, what: `range ${key} ${what}` });
      assertClose(s.variants[key].atK, c.at_k[key], { rtol: 1e-5, what: `loss at k ${key} ${what}` });
    }
  }
  assert.throws(() => sliceAt(data, { step: 15, k: 1 }), /step 15 is not a recorded checkpoint/);
});

test("the title and readout say what Python's would", () => {
  for (const c of cases) {
    const s = sliceAt(data, c.settings);
    assert.equal(sliceTitle(data, s, c.settings.step), c.title);
    assert.equal(sliceReadout(data, s), c.readout);
  }
  const s = sliceAt(only_bn.data, { step: 0, k: 1 });
  assert.equal(sliceTitle(only_bn.data, s, 0), only_bn.title);
  const f = sliceAt(flipped.data, { step: 20, k: 1 });
  assert.equal(sliceTitle(flipped.data, f, 20), flipped.title);
  assert.match(flipped.title, /more with BN than without/);
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "LossSliceExplorer");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 100, "the figure is drawn");
  const written = () => canvas.ctx.texts;
  const first = cases.find((c) => c.settings.step === data.initial.step);
  for (const text of ["without BN", "with BN", "noisy BN", "training loss on the batch", first.title]) {
    assert.ok(written().includes(text), `${text} is not written on the figure: ${written().join(" | ")}`);
  }
  assert.ok(!written().some((t) => /undefined|NaN/.test(t)), written().join(" | "));
  const main = control(root, "step");
  assert.ok("main" in main.dataset);
  assert.equal(readout.innerHTML, sliceReadout(data, sliceAt(data, data.initial)));
  main.value = "2";
  main.dispatch("input");
  const k = control(root, "k");
  k.value = "2.5";
  k.dispatch("input");
  assert.equal(root.dataset.draws, "3");
  const last = sliceAt(data, { step: data.steps[2], k: 2.5 });
  assert.equal(readout.innerHTML, sliceReadout(data, last));
  assert.ok(written().includes(sliceTitle(data, last, data.steps[2])), written().join(" | "));
});
