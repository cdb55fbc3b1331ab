import assert from "node:assert/strict";
import { test } from "node:test";

import view, { sliceAt, sliceReadout, sliceTitle } from "../../bnlab/static/loss_slice_explorer.js";
import { control, find, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { data, cases, only_bn, flipped, seeded } = fixtures.loss_slice_explorer;

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
  assert.equal(find(root, (n) => n.dataset.control === "seed"), null, "one seed each: no seed control");
  const last = sliceAt(data, { step: data.steps[2], k: 2.5 });
  assert.equal(readout.innerHTML, sliceReadout(data, last));
  assert.ok(written().includes(sliceTitle(data, last, data.steps[2])), written().join(" | "));
});

test("with seeds: the chosen seed's slices, and every seed's loss range at the checkpoint", () => {
  const d = seeded.data;
  for (const c of seeded.cases) {
    const s = sliceAt(d, c.settings);
    const what = JSON.stringify(c.settings);
    assert.equal(s.index, c.index, what);
    assert.equal(s.kIndex, c.k_index, what);
    assert.equal(s.seedIndex, c.seed_index, what);
    assert.equal(s.seed, c.settings.seed, what);
    for (const key of d.variants) {
      const v = s.variants[key];
      assertClose(v.range, c.ranges[key], { rtol: 1e-5, atol: 2e-5, what: `range ${key} ${what}` });
      assertClose(v.seedRanges, c.seed_ranges[key], { rtol: 1e-5, atol: 2e-5, what: `seed ranges ${key} ${what}` });
      assertClose(v.atK, c.at_k[key], { rtol: 1e-5, what: `loss at k ${key} ${what}` });
      assertClose(v.loss0, c.loss0[key], { rtol: 1e-5, what: `L(theta) ${key} ${what}` });
    }
    assert.equal(sliceTitle(d, s, c.settings.step), c.title, what);
    assert.equal(sliceReadout(d, s), c.readout, what);
  }
  assert.throws(() => sliceAt(d, { step: 10, k: 1, seed: 7 }), /seed 7 is not one of the runs' seeds/);
});

test("with seeds the view has a seed select; choosing a seed redraws that seed's slices", () => {
  const d = seeded.data;
  const { root, canvas, readout } = renderView(view, d);
  assert.equal(root.dataset.explorer, "LossSliceExplorer");
  assert.ok("main" in control(root, "step").dataset);
  const select = control(root, "seed");
  assert.equal(select.tagName, "SELECT");
  assert.deepEqual(select.children.map((o) => o.textContent), d.seeds.map(String));
  const at = (settings) => seeded.cases.find((c) => c.settings.step === settings.step && c.settings.k === settings.k
                                             && c.settings.seed === settings.seed);
  const first = at({ step: d.initial.step, k: 0.25, seed: d.initial.seed });
  assert.ok(canvas.ctx.texts.includes(first.title), canvas.ctx.texts.join(" | "));
  control(root, "k").value = "0.25";
  control(root, "k").dispatch("input");
  assert.equal(readout.innerHTML, first.readout);
  for (const seed of d.seeds.filter((s) => s !== d.initial.seed)) {
    select.value = String(seed);
    select.dispatch("change");
    const c = at({ step: d.initial.step, k: 0.25, seed });
    assert.equal(readout.innerHTML, c.readout);
    assert.ok(canvas.ctx.texts.includes(c.title), canvas.ctx.texts.join(" | "));
  }
  assert.equal(root.dataset.draws, String(2 + d.seeds.length - 1));
  assert.ok(!canvas.ctx.texts.some((t) => /undefined|NaN|null/.test(t)), canvas.ctx.texts.join(" | "));
  assert.ok(!/undefined|NaN|null/.test(readout.innerHTML), readout.innerHTML);
});
