// The numbers bnlab computed for the JavaScript tests: tests/test_js.py writes them (from bnlab
// itself, never copied from the JavaScript) and runs `node --test tests/js/` with BNLAB_JS_FIXTURES.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.env.BNLAB_JS_FIXTURES;
if (!dir) {
  throw new Error("BNLAB_JS_FIXTURES is not set: run these tests through pytest (python -m pytest tests/test_js.py)");
}

export const fixtures = JSON.parse(readFileSync(join(dir, "fixtures.json"), "utf8"));
export const bundles = fixtures.bundles.map((name) => join(dir, name));

// |a - b| <= atol + rtol |b|, element-wise, with a message naming the first miss
export function assertClose(actual, expected, { rtol = 1e-12, atol = 1e-12, what = "value" } = {}) {
  const a = Array.isArray(actual) ? actual : [actual];
  const b = Array.isArray(expected) ? expected : [expected];
  if (a.length !== b.length) throw new Error(`${what}: ${a.length} values, expected ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    if (!(Math.abs(a[i] - b[i]) <= atol + rtol * Math.abs(b[i]))) {
      throw new Error(`${what}[${i}] = ${a[i]}, expected ${b[i]} (rtol ${rtol}, atol ${atol})`);
    }
  }
}
