import assert from "node:assert/strict";
import { test } from "node:test";

import view, {
  coupling, couplingReadout, signedE, signedF, signedG, upstreamGradient,
} from "../../bnlab/static/gradient_coupling.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { data, cases, formats, names } = fixtures.gradient_coupling;
const label = (c) => JSON.stringify(c.settings);

test("each move's dx, with and without batch statistics, is GradientCoupling.compute's", () => {
  assert.equal(cases.length, 5 * data.patterns.length);
  for (const c of cases) {
    const r = coupling(data, c.settings);
    // atol: dx is 0 up to rounding for some patterns (constant, proportional to x_hat)
    const atol = 1e-13 * Math.max(...c.dx_fixed.map(Math.abs));
    assertClose(r.xHat, c.x_hat, { rtol: 1e-12, atol: 1e-13, what: `x_hat ${label(c)}` });
    assertClose(r.dy, c.dy, { rtol: 1e-12, atol: 1e-13, what: `dy ${label(c)}` });
    assertClose(r.dx, c.dx, { rtol: 1e-10, atol, what: `dx ${label(c)}` });
    assertClose(r.dxFixed, c.dx_fixed, { rtol: 1e-12, atol: 0, what: `dx, statistics fixed ${label(c)}` });
  }
});

test("the three terms are GradientCoupling.terms' and add up to dx", () => {
  for (const c of cases) {
    const r = coupling(data, c.settings);
    const atol = 1e-13 * Math.max(...c.dx_fixed.map(Math.abs));
    for (const key of ["own", "mean", "scale"]) {
      assertClose(r.terms[key], c.terms[key], { rtol: 1e-10, atol, what: `${key} term ${label(c)}` });
    }
    const added = r.terms.own.map((o, i) => o + r.terms.mean[i] + r.terms.scale[i]);
    assertClose(added, c.dx, { rtol: 1e-10, atol, what: `own + mean + scale ${label(c)}` });
  }
});

test("the readout's sums: sum dx = 0 with batch statistics, not with statistics held fixed", () => {
  for (const c of cases) {
    const r = coupling(data, c.settings);
    const scale = Math.max(...c.dx_fixed.map(Math.abs)) * c.dx.length;
    for (const key of ["dx", "dxXhat", "own", "mean", "scale"]) {
      assertClose(r.sums[key], c.sums[key], { rtol: 1e-10, atol: 1e-13 * scale, what: `sum ${key} ${label(c)}` });
    }
    assertClose(r.sums.fixed, c.sums.fixed, { rtol: 1e-12, atol: 1e-13 * scale, what: `sum fixed ${label(c)}` });
    assert.ok(Math.abs(r.sums.dx) <= 1e-13 * scale, `sum dx = ${r.sums.dx} ${label(c)}`);
    assert.ok(Math.abs(r.sums.own + r.sums.mean) <= 1e-13 * scale && Math.abs(r.sums.scale) <= 1e-13 * scale);
  }
  const one = coupling(data, { batch_size: 8, pattern: "only sample 0", gamma: 1 });
  assert.equal(one.dxFixed.filter((d) => d !== 0).length, 1);   // held fixed: only sample 0 gets gradient
  assert.equal(one.dx.filter((d) => Math.abs(d) > 1e-6).length, 8);
  assert.ok(Math.abs(one.sums.fixed) > 0.1);
});

test("the readout writes the sums in Python's formats", () => {
  for (const [x, e2, g3, f3] of formats) {
    assert.equal(signedE(x, 2), e2, `format(${x}, '+.2e')`);
    assert.equal(signedG(x, 3), g3, `format(${x}, '+.3g')`);
    assert.equal(signedF(x, 3), f3, `format(${x}, '+.3f')`);
  }
  for (const c of cases) {
    const r = coupling(data, c.settings);
    const text = couplingReadout(r, data.terms);
    assert.ok(text.includes(c.readout_fixed), `${text} lacks ${c.readout_fixed}`);
    assert.ok(text.includes(`<b>Σ dx = ${signedE(r.sums.dx, 2)}</b> (≈ 0)`));
    for (const [k, key] of ["own", "mean", "scale"].entries()) {
      assert.ok(text.includes(`Σ ${names[k]} = ${signedG(r.sums[key], 3)}`), text);
    }
  }
});

test("upstream patterns: the recorded noise, the largest sample, and unknown names refused", () => {
  const x = data.x.slice(0, 10);
  assert.deepEqual(upstreamGradient("two samples", x.slice(0, 4), data.noise, null), [1, -1, 0, 0]);
  assert.deepEqual(upstreamGradient("random", x.slice(0, 5), data.noise, null), data.noise.slice(0, 5));
  const largest = upstreamGradient("only the largest sample", x, data.noise, null);
  assert.equal(largest[x.indexOf(Math.max(...x))], 1);
  assert.equal(largest.reduce((s, v) => s + v, 0), 1);
  assert.deepEqual(upstreamGradient("only the largest sample", [3, 1, 3], [], null), [1, 0, 0]);   // numpy.argmax
  assert.throws(() => upstreamGradient("all of them", x, data.noise, null), /unknown upstream pattern/);
  assert.throws(() => coupling(data, { batch_size: 65, pattern: "constant", gamma: 1 }), /batch_size must be in 2..64/);
  assert.throws(() => coupling(data, { batch_size: 1, pattern: "constant", gamma: 1 }), /batch_size/);
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "GradientCoupling");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 100, "the figure is drawn");
  const written = () => canvas.ctx.texts;
  for (const text of [...Object.values(data.legend), ...data.terms, "their sum dx_i", "dL/dx_i",
                      "sample index i in the batch", "its gradients sum to zero"]) {
    assert.ok(written().includes(text), `${text} is not written on the figure`);
  }
  assert.ok(!written().some((t) => /undefined|NaN/.test(t)), written().join(" | "));
  const main = control(root, "batch_size");
  assert.ok("main" in main.dataset && main.value === String(data.initial.batch_size));
  const first = coupling(data, data.initial);
  assert.equal(readout.innerHTML, couplingReadout(first, data.terms));
  const pattern = control(root, "pattern");
  for (const name of data.patterns) {
    pattern.value = name;
    pattern.dispatch("change");
  }
  main.value = "32";
  main.dispatch("input");
  control(root, "gamma").value = "3";
  control(root, "gamma").dispatch("input");
  assert.equal(root.dataset.draws, String(2 + data.patterns.length + 1));
  assert.ok(!written().some((t) => /undefined|NaN/.test(t)), written().join(" | "));
  assert.ok(written().includes("30"), "sample indices up to 31 are ticked");
  const last = coupling(data, { batch_size: 32, pattern: data.patterns.at(-1), gamma: 3 });
  assert.equal(readout.innerHTML, couplingReadout(last, data.terms));
});
