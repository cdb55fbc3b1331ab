import assert from "node:assert/strict";
import { test } from "node:test";

import {
  activationHeatmapPixels, activationPlayNext, activationReadout, activationViridis,
  decodeFractions, decodeLayer, histogramAt,
} from "../../bnlab/static/activation_explorer.js";
import { recordIndex } from "../../bnlab/static/bn.js";
import { assertClose, fixtures } from "./fixtures.mjs";

const f = fixtures.activation_explorer;

test("the histograms decode to bnlab's decode_fractions, within 0.2 % of the fractions encoded", () => {
  const decoded = Array.from(decodeFractions(f.codec.text, f.data.fractions));
  assertClose(decoded, f.codec.decoded, { rtol: 1e-12, atol: 0, what: "decoded" });
  // 0 stays 0; 1e-9 is below the range and comes back as its floor 1e-7; the rest within 0.2 %
  assert.equal(decoded[0], 0);
  assertClose(decoded[3], 1e-7, { rtol: 1e-12, atol: 0, what: "below the range" });
  f.codec.fractions.forEach((x, i) => {
    if (i !== 3) assertClose(decoded[i], x, { rtol: 2e-3, atol: 0, what: `fraction ${i}` });
  });
  assert.throws(() => decodeFractions("ABC", f.data.fractions), /two characters/);
  assert.throws(() => decodeFractions("A*", f.data.fractions), /bad character/);
});

test("the histogram at a step is the recorded one at the record at or before it", () => {
  for (const c of f.cases) {
    assert.equal(recordIndex(f.data.steps, c.step), c.index, `step ${c.step}`);
    for (const run of f.data.runs) {
      for (const layer of f.data.layers) {
        const d = decodeLayer(run.layers[layer], f.data.fractions);
        const [edges, hist] = histogramAt(run.layers[layer], d, c.index, false);
        assert.equal(edges, run.layers[layer].edges);
        assertClose(hist, c.histograms[run.key][layer].hist, { rtol: 1e-12, atol: 0, what: `${run.key} ${layer} hist` });
        const [gradEdges, grad] = histogramAt(run.layers[layer], d, c.index, true);
        assert.equal(gradEdges, run.layers[layer].grad_edges);
        assertClose(grad, c.histograms[run.key][layer].grad_hist, { rtol: 1e-12, atol: 0, what: `${run.key} grad` });
      }
    }
  }
});

test("the readout shows Python's formatting of the records at that step", () => {
  for (const c of f.cases) {
    for (const layer of f.data.layers) {
      const { rows, header } = activationReadout(f.data, layer, c.index);
      assert.deepEqual(header, f.header);
      assert.deepEqual(rows, c.readout[layer], `step ${c.step}, ${layer}`);
    }
  }
});

test("the heatmap's colours are matplotlib's viridis, the last bin in the top row", () => {
  for (const [t, rgb] of f.viridis) {
    activationViridis(t).forEach((c, k) => assert.ok(Math.abs(c - rgb[k]) <= 3, `viridis(${t}) = ${activationViridis(t)}, ${rgb}`));
  }
  const { flat, records, bins, range, pixels } = f.heatmap;
  const out = activationHeatmapPixels(flat, records, bins, range);
  assert.equal(out.length, records * bins * 4);
  pixels.forEach((rgba, p) => {
    for (let k = 0; k < 4; k++) {
      assert.ok(Math.abs(out[4 * p + k] - rgba[k]) <= 3, `pixel ${p}: ${Array.from(out.slice(4 * p, 4 * p + 4))}, ${rgba}`);
    }
  });
});

test("play steps on by records and stops at the last one", () => {
  for (const c of f.play.cases) {
    assert.equal(activationPlayNext(f.play.steps, c.step, c.stride), c.expected, `from ${c.step} by ${c.stride}`);
  }
});
