import { test } from "node:test";

import { playground } from "../../bnlab/static/forward_playground.js";
import { assertClose, fixtures } from "./fixtures.mjs";

test("the playground's BN matches ForwardPlayground.compute on the same sample", () => {
  const { samples, cases } = fixtures.playground;
  for (const c of cases) {
    const r = playground(samples, c.settings);
    assertClose(r.x, c.x, { rtol: 1e-12, atol: 1e-12, what: "x" });
    assertClose(r.y, c.y, { rtol: 1e-9, atol: 1e-10, what: `y (${JSON.stringify(c.settings)})` });
    assertClose(r.mu, c.mu, { rtol: 1e-12, atol: 1e-12, what: "mu" });
    assertClose(r.var, c.var, { rtol: 1e-10, atol: 1e-300, what: "var" });
  }
});
