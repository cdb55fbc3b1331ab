import assert from "node:assert/strict";
import { test } from "node:test";

import { pyExp, pyFixed } from "../../bnlab/static/bn.js";
import { fixtures } from "./fixtures.mjs";

test("pyFixed and pyExp format as Python's .{d}f and .{d}e, exact ties to the even digit", () => {
  for (const [raw, byDigits] of fixtures.py_format.cases) {
    const x = typeof raw === "string" ? Number(raw.replace("inf", "Infinity")) : raw;
    for (const [d, [fixed, exp]] of Object.entries(byDigits)) {
      assert.equal(pyFixed(x, Number(d)), fixed, `${x}:.${d}f`);
      assert.equal(pyExp(x, Number(d)), exp, `${x}:.${d}e`);
    }
  }
  assert.deepEqual([pyFixed(null, 3), pyExp(NaN, 2)], fixtures.py_format.nan);
});
