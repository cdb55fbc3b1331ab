import assert from "node:assert/strict";
import { test } from "node:test";

import { logTicks, niceTicks, paddedRange, table } from "../../bnlab/static/explorer.js";
import { bundles } from "./fixtures.mjs";

test("nice ticks are round numbers that cover the range", () => {
  for (const [a, b] of [[0, 1], [-3.2, 7.9], [0.001, 0.0042], [-50, 50], [12, 13]]) {
    const ticks = niceTicks(a, b);
    assert.ok(ticks.length >= 3 && ticks.length <= 11, `${ticks.length} ticks for [${a}, ${b}]`);
    assert.ok(ticks[0] >= a - 1e-12 && ticks.at(-1) <= b + 1e-12);
    const step = ticks[1] - ticks[0];
    const mantissa = step / 10 ** Math.floor(Math.log10(step));
    assert.ok([1, 2, 2.5, 5].some((m) => Math.abs(mantissa - m) < 1e-9), `step ${step}`);
  }
  assert.deepEqual(logTicks(1e-3, 10), [1e-3, 1e-2, 1e-1, 1, 10]);
});

test("padded range pads the span and survives a constant", () => {
  assert.deepEqual(paddedRange([0, 10], 0.1), [-1, 11]);
  assert.deepEqual(paddedRange([2, 2]), [1.5, 2.5]);
  assert.deepEqual(paddedRange([NaN]), [0, 1]);
});

test("tables escape their text", () => {
  assert.match(table({ "a<b": ["1"] }, ["x&y"]), /a&lt;b.*|x&amp;y/);
});

test("every explorer bundles into one module whose default export renders", async () => {
  assert.ok(bundles.length >= 1);
  for (const path of bundles) {
    const module = await import(path);
    assert.equal(typeof module.default.render, "function", path);
  }
});
