import assert from "node:assert/strict";
import { test } from "node:test";

import view, { gridCell, regularizationReadout, regularizationTitle } from "../../bnlab/static/regularization_explorer.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { data, cases } = fixtures.regularization_explorer;

test("the mean gap per batch size and the batch size where it is smallest", () => {
  for (const c of cases) {
    const cell = gridCell(data, c.settings);
    c.means.forEach((m, i) => assertClose(cell.means[i], m, { atol: 1e-9, what: JSON.stringify(c.settings) }));
    assert.equal(cell.best, c.best);
  }
  assert.throws(() => gridCell(data, { dropout: 0.3, weight_decay: 0 }), /not in the grid/);
});

test("the title and readout say what Python's would", () => {
  for (const c of cases) {
    const cell = gridCell(data, c.settings);
    assert.equal(regularizationTitle(data, cell, c.settings), c.title);
    assert.equal(regularizationReadout(data, cell, c.settings), c.readout);
  }
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "RegularizationExplorer");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 50, "the figure is drawn");
  const first = cases.find((c) => c.settings.batch_size === data.initial.batch_size && c.settings.dropout === 0
                           && c.settings.weight_decay === 0);
  for (const text of ["batch size", "mean over seeds", first.title]) {
    assert.ok(canvas.ctx.texts.includes(text), `${text} is not written: ${canvas.ctx.texts.join(" | ")}`);
  }
  assert.equal(readout.innerHTML, first.readout);
  const main = control(root, "batch_size");
  assert.ok("main" in main.dataset);
  main.value = "3";
  main.dispatch("input");
  assert.equal(root.dataset.draws, "2");
  const last = cases.find((c) => c.settings.batch_size === 300 && c.settings.dropout === 0 && c.settings.weight_decay === 0);
  assert.equal(readout.innerHTML, last.readout);
  assert.ok(canvas.ctx.texts.includes(last.title));
  assert.ok(!canvas.ctx.texts.some((t) => /undefined|NaN/.test(t)), canvas.ctx.texts.join(" | "));
});
