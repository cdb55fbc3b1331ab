import assert from "node:assert/strict";
import { test } from "node:test";

import { table } from "../../bnlab/static/explorer.js";
import {
  decodeMask, greyPixels, hexRgb, maskPixels, maskReadout, maskTitle, maskView,
} from "../../bnlab/static/mask_explorer.js";
import { fixtures } from "./fixtures.mjs";

const f = fixtures.masks;

test("the masks decode to the class ids recorded, true and predicted at every step", () => {
  f.data.masks.forEach((text, i) => assert.deepEqual(Array.from(decodeMask(text)), f.truth[i]));
  for (const [name, bySteps] of Object.entries(f.predictions)) {
    bySteps.forEach((masks, s) => masks.forEach((ids, i) => {
      assert.deepEqual(Array.from(decodeMask(f.data.predictions[name][s][i])), ids, `${name} step ${s} image ${i}`);
    }));
  }
});

test("masks are painted in plot_masks' class colours, pixel for pixel", () => {
  assert.deepEqual(f.data.class_colors.map(hexRgb), f.class_rgba.map((c) => c.slice(0, 3)));
  for (const { ids, rgba } of f.paint) {
    assert.deepEqual(Array.from(maskPixels(Uint8Array.from(ids), f.data.class_colors)), rgba);
  }
});

test("the images are painted as matplotlib's grey colour map shows the original values (to one level)", () => {
  f.data.images.forEach((levels, i) => {
    const px = greyPixels(levels);
    assert.equal(px.length, f.grey[i].length);
    for (let k = 0; k < px.length; k++) {
      assert.ok(Math.abs(px[k] - f.grey[i][k]) <= 1, `image ${i}, byte ${k}: ${px[k]}, matplotlib ${f.grey[i][k]}`);
    }
  });
});

test("a move picks the step's record, the rows and each variant's IoU; the readout and title follow", () => {
  for (const v of f.views) {
    const view = maskView(f.data, v.step, v.first);
    assert.equal(view.stepIndex, v.stepIndex);
    assert.equal(view.step, v.step);
    assert.deepEqual(view.images, v.images);
    assert.deepEqual(view.scores, Object.fromEntries(Object.entries(v.scores).map(([k, s]) => [k, s ?? null])));
    assert.equal(maskTitle(f.data, view), v.title);    // figure()'s title for the same step and rows
    assert.ok(maskReadout(f.data, view).startsWith(table(v.rows, v.header)));
  }
  // a first image beyond the last screenful shows the last screenful
  assert.deepEqual(maskView(f.data, 50, 99).images, [2, 3, 4]);
});
