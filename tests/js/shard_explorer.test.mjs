import assert from "node:assert/strict";
import { test } from "node:test";

import view, {
  deviceClasses, largestVariance, shardMoments, shardReadout, shardSizes, shardTitle, stripJitter, valueLimits,
} from "../../bnlab/static/shard_explorer.js";
import { control, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

const { digits, synthetic, jitter } = fixtures.shard_explorer;
const sets = { digits, synthetic };

test("shard sizes: N / W each, or proportional to r + 1, adding up to N", () => {
  for (const [name, { data, cases }] of Object.entries(sets)) {
    for (const c of cases) {
      const sizes = shardSizes(data.values.length, c.settings.devices, c.settings.sizes);
      assert.deepEqual(sizes, c.counts, `${name} ${JSON.stringify(c.settings)}`);
      assert.equal(sizes.reduce((s, n) => s + n, 0), data.values.length);
    }
  }
  assert.throws(() => shardSizes(10, 3, "equal"), /do not split into 3 equal shards/);
  assert.throws(() => shardSizes(10, 2, "random"), /sizes must be/);
});

test("every device's moments, their averages and Chan's combine are numpy's and combine_moments'", () => {
  for (const [name, { data, cases }] of Object.entries(sets)) {
    for (const c of cases) {
      const m = shardMoments(data, c.settings);
      const what = `${name} ${JSON.stringify(c.settings)}`;
      assert.deepEqual(m.counts, c.counts, what);
      assertClose(m.means, c.means, { rtol: 1e-12, atol: 1e-14, what: `${what} means` });
      assertClose(m.variances, c.variances, { rtol: 1e-11, atol: 1e-14, what: `${what} variances` });
      assertClose([m.global.mean, m.global.var], c.global, { rtol: 1e-12, what: `${what} global` });
      assertClose([m.plainAverage.mean, m.plainAverage.var], c.plain_average, { rtol: 1e-12, what: `${what} plain` });
      assertClose([m.within, m.between], [c.within, c.between], { rtol: 1e-10, atol: 1e-14, what: `${what} parts` });
      assertClose([m.combined.mean, m.combined.var], c.combined, { rtol: 1e-12, what: `${what} combine` });
      // the law of total variance, and the combine is the whole batch's statistics
      assertClose(m.within + m.between, m.global.var, { rtol: 1e-12, what: `${what} within + between` });
      assertClose(m.combined.var, m.global.var, { rtol: 1e-12, what: `${what} combine = global` });
      assert.deepEqual(m.shards.map((s) => deviceClasses(s.classes)),
                       c.classes.map((k) => (k.length <= 3 ? k.join(", ") : `${k.length} classes`)), what);
    }
  }
  const { data } = digits;
  assert.throws(() => shardMoments(data, { devices: 7, sharding: "iid (shuffled)", sizes: "equal" }), /7 devices/);
  assert.throws(() => shardMoments(data, { devices: 2, sharding: "by colour", sizes: "equal" }), /sharding/);
});

test("sorted by class, per-device BN misses a part of the variance that iid shards keep", () => {
  const { data } = digits;
  const share = (sharding) => {
    const m = shardMoments(data, { devices: 10, sharding, sizes: "equal" });
    return m.within / m.global.var;
  };
  assert.ok(share("sorted by class") < 0.6 && share("iid (shuffled)") > 0.9,
            `${share("sorted by class")} vs ${share("iid (shuffled)")}`);
});

test("the title and readout say what Python's would; the axes' scales are Python's", () => {
  for (const [name, { data, cases, largest_variance: largest, value_limits: limits }] of Object.entries(sets)) {
    for (const c of cases) {
      const m = shardMoments(data, c.settings);
      assert.equal(shardTitle(m, c.settings), c.title, name);
      assert.equal(shardReadout(m), c.readout, `${name} ${JSON.stringify(c.settings)}`);
    }
    assertClose(largestVariance(data), largest, { rtol: 1e-11, what: `${name} largest variance` });
    assertClose(valueLimits(data.values), limits, { rtol: 1e-12, what: `${name} value axis` });
  }
  assertClose(stripJitter(7), jitter, { rtol: 1e-12, atol: 1e-15, what: "jitter" });
});

test("the view renders its controls, figure and readout, and redraws on a move", () => {
  const { data, cases } = digits;
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "ShardExplorer");
  assert.equal(root.dataset.draws, "1");
  assert.ok(canvas && canvas.ctx.calls > 100, "the figure is drawn");
  const at = (settings) => cases.find((c) => Object.entries(settings).every(([k, v]) => c.settings[k] === v));
  const first = at(data.initial);
  for (const text of [first.title, "device r", data.feature, "sum", "σ²_B of the whole batch"]) {
    assert.ok(canvas.ctx.texts.includes(text), `${text} is not written: ${canvas.ctx.texts.join(" | ")}`);
  }
  assert.equal(readout.innerHTML, first.readout);
  const main = control(root, "devices");
  assert.ok("main" in main.dataset);
  main.value = String(data.devices.length - 1);
  main.dispatch("input");
  const sharding = control(root, "sharding");
  sharding.value = "iid (shuffled)";
  sharding.dispatch("change");
  const sizes = control(root, "sizes");
  sizes.value = "unequal";
  sizes.dispatch("change");
  assert.equal(root.dataset.draws, "4");
  const last = at({ devices: data.devices.at(-1), sharding: "iid (shuffled)", sizes: "unequal" });
  assert.equal(readout.innerHTML, last.readout);
  assert.ok(canvas.ctx.texts.includes(last.title), canvas.ctx.texts.join(" | "));
  assert.ok(!canvas.ctx.texts.some((t) => /undefined|NaN|null/.test(t)), canvas.ctx.texts.join(" | "));
  assert.ok(!/undefined|NaN|null/.test(readout.innerHTML), readout.innerHTML);
});
