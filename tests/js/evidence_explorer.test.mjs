import assert from "node:assert/strict";
import { test } from "node:test";

import view, {
  evidenceBars, evidenceCanvasHeight, evidenceCounts, evidenceCountsLine, evidenceFiltered, evidenceHeader,
  evidenceLabel, evidenceLimits, evidenceNumbers, evidenceOffAxis, evidenceReadout, evidenceSelect, evidenceTitle,
  pyG,
} from "../../bnlab/static/evidence_explorer.js";
import { control, fakeDom, find, renderView } from "./fake_dom.mjs";
import { assertClose, fixtures } from "./fixtures.mjs";

// the view refills the claims' drop-down with replaceChildren, which fake_dom's elements lack (this
// file runs in a process of its own: no other test sees it)
Object.getPrototypeOf(fakeDom()).replaceChildren ??= function replaceChildren(...children) {
  this.children = children;
  this.selectedIndex = 0;
};

const { sample, many, format_g: formatCases } = fixtures.evidence_explorer;
const sets = { sample, many };
const NON_FINITE = { nan: NaN, inf: Infinity, "-inf": -Infinity };
const decode = (v) => (typeof v === "string" ? NON_FINITE[v] : v);
const byId = (set, id) => set.data.items.find((item) => item.id === id);
const stripTags = (html) => html.replace(/<[^>]*>/g, "");
const unescape = (s) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#39;/g, "'")
  .replace(/&amp;/g, "&");

test("pyG is Python's format(x, '.pg'), ties and non-finite values included", () => {
  for (const [x, p, expected] of formatCases) assert.equal(pyG(decode(x), p), expected, `${x} to ${p} digits`);
});

test("numbers come in their order, non-finite ones decoded", () => {
  const odd = byId(sample, "beyond-odd");
  const numbers = evidenceNumbers(odd);
  assert.deepEqual(numbers.map(([name]) => name), odd.numbers.map(([name]) => name));
  assert.ok(Number.isNaN(numbers[0][1]) && numbers[1][1] === Infinity && numbers[2][1] === -Infinity);
  assert.ok(Object.is(numbers[4][1], 0), "-0.0 is sent as 0");
  assert.deepEqual(evidenceNumbers(byId(sample, "s003-lr")).map(([name]) => name), ["10", "2", "max stable lr", "equal size"]);
  assert.throws(() => evidenceNumbers({ id: "x", numbers: [["a", "lots"]] }), /number a is "lots"/);
});

test("labels, bars, off-axis numbers, limits and titles are EvidenceExplorer's", () => {
  for (const [name, set] of Object.entries(sets)) {
    for (const expected of set.items) {
      const item = byId(set, expected.id);
      const what = `${name} ${expected.id}`;
      assert.equal(evidenceLabel(item, set.data.label_chars), expected.label, what);
      const bars = evidenceBars(item);
      assert.deepEqual(bars.map(([n]) => n), expected.bars.map(([n]) => n), what);
      assertClose(bars.map(([, b]) => b), expected.bars.map(([, b]) => b), { rtol: 1e-13, atol: 1e-15, what });
      const off = evidenceOffAxis(item);
      assert.deepEqual(off.map(([n]) => n), expected.off_axis.map(([n]) => n), what);
      off.forEach(([, v], i) => assert.ok(Object.is(v, decode(expected.off_axis[i][1])), `${what} ${v}`));
      assertClose(evidenceLimits(bars), expected.limits, { rtol: 1e-13, atol: 1e-15, what: `${what} limits` });
      assert.equal(evidenceTitle(item), expected.title, what);
      assert.equal(evidenceReadout(item), expected.readout, what);
    }
  }
});

test("counts and filters are EvidenceExplorer's", () => {
  for (const [name, set] of Object.entries(sets)) {
    assert.deepEqual(evidenceCounts(set.data), set.counts, name);
    assert.equal(evidenceCountsLine(set.data), set.counts_line, name);
    for (const [label, ids] of Object.entries(set.filtered)) {
      assert.deepEqual(evidenceFiltered(set.data, label).map((item) => item.id), ids, `${name} ${label}`);
    }
  }
  assert.throws(() => evidenceFiltered(sample.data, "mostly true"), /filter mostly true/);
});

test("the header says the verdict, the texts (escaped), where it is proved and whether the evidence holds", () => {
  for (const item of sample.data.items) {
    const html = evidenceHeader(item, sample.data);
    assert.ok(html.includes(`background:${sample.data.verdict_colors[item.verdict]}`), item.id);
    const text = unescape(stripTags(html));
    for (const part of [item.verdict, item.id, item.source, item.explanation, item.translation,
                        `proved in lesson ${item.lesson}: ${item.summary}`, sample.counts_line]) {
      assert.ok(text.includes(part), `${item.id}: ${JSON.stringify(part)} not in ${text}`);
    }
    if (item.quote) assert.ok(text.includes(`“${item.quote}”`) && html.includes("dir='auto'"), item.id);
    else assert.ok(!text.includes("“") || item.explanation.includes("“"), item.id);
    assert.ok(text.includes(item.passed ? "✓ the evidence supports the verdict" : "✗ the evidence does not support"));
    // nothing of the claims' own text is markup
    assert.ok(!/<b>&|<draft>/.test(html), html);
  }
  const colors = sample.data.verdict_colors;
  assert.deepEqual(colors, { true: "#2ca02c", false: "#d62728", "half-true": "#ff7f0e", "untestable as stated": "#7f7f7f" });
});

test("a move picks the claim: the filter keeps it where it passes, the slider numbers the filtered list", () => {
  const data = sample.data;
  let state = evidenceSelect(data, { filter: "all", id: "s003-lr", number: 0 }, { filter: "all", number: 0, claim: "s003-lr" });
  assert.equal(state.number, 2);
  state = evidenceSelect(data, state, { filter: "half-true", number: 2, claim: "s003-lr" });
  assert.deepEqual([state.id, state.number, state.list.length], ["s003-lr", 1, 2]);
  state = evidenceSelect(data, state, { filter: "half-true", number: 2, claim: "s003-lr" });
  assert.equal(state.id, "beyond-off-only");
  state = evidenceSelect(data, state, { filter: "true", number: 2, claim: "beyond-off-only" });
  assert.deepEqual([state.id, state.number], [sample.filtered.true[0], 1]);
  state = evidenceSelect(data, state, { filter: "true", number: 1, claim: "s005-count" });
  assert.deepEqual([state.id, state.number], ["s005-count", 2]);
  // a slider between positions (an e2e move) lands on a claim
  state = evidenceSelect(data, { ...state, filter: "all" }, { filter: "all", number: 6.6, claim: "s005-count" });
  assert.equal(state.id, sample.filtered.all[6]);
});

test("the view renders its controls, header, chart and table, and redraws on every move", () => {
  const { data } = sample;
  const { root, canvas, readout } = renderView(view, data);
  assert.equal(root.dataset.explorer, "EvidenceExplorer");
  assert.equal(root.dataset.draws, "1");
  const header = find(root, (n) => n.className === "bnlab-evidence");
  const shown = (id) => {
    const expected = sample.items.find((c) => c.id === id);
    assert.ok(canvas.ctx.texts.includes(expected.title), `${expected.title} not in ${canvas.ctx.texts.join(" | ")}`);
    assert.equal(readout.innerHTML, expected.readout);
    assert.equal(header.innerHTML, evidenceHeader(byId(sample, id), data));
    assert.ok(!canvas.ctx.texts.some((t) => /undefined|NaN|null/.test(t)), canvas.ctx.texts.join(" | "));
  };
  shown("s003-lr");
  for (const text of ["log10 |value|  (0: |value| = 1)", "max stable lr", "10", "0.001", "-30"]) {
    assert.ok(canvas.ctx.texts.includes(text), `${text} not in ${canvas.ctx.texts.join(" | ")}`);
  }
  const claim = control(root, "claim"), filter = control(root, "filter"), number = control(root, "number");
  assert.ok("main" in number.dataset && number.type === "range");
  assert.deepEqual(claim.children.map((o) => o.textContent), sample.items.map((c) => c.label));
  assert.equal([number.min, number.max, number.value].join(), `1,${sample.items.length},2`);

  number.value = String(sample.items.length);
  number.dispatch("input");
  shown(sample.filtered.all.at(-1));
  assert.equal(claim.value, sample.filtered.all.at(-1));

  claim.value = "beyond-odd";
  claim.dispatch("change");
  shown("beyond-odd");
  assert.equal(number.value, String(sample.filtered.all.indexOf("beyond-odd") + 1));
  assert.ok(canvas.ctx.texts.some((t) => t.startsWith("not on the log axis: nan loss = nan, overflow = inf")));

  filter.value = "untestable";
  filter.dispatch("change");
  shown("beyond-empty");
  assert.deepEqual(claim.children.map((o) => o.value), ["beyond-empty"]);
  assert.equal([number.max, number.value].join(), "1,1");
  assert.ok(canvas.ctx.texts.includes("this claim's proof records no numbers"));

  filter.value = "all";
  filter.dispatch("change");
  shown("beyond-empty");
  assert.equal(claim.children.length, sample.items.length);
  assert.equal(root.dataset.draws, "5");
});

test("the main slider's two ends show different claims, and the canvas fits the longest chart", () => {
  const { data } = many;
  const { root, canvas } = renderView(view, data);
  const number = control(root, "number");
  const title = () => canvas.ctx.texts[0];
  number.value = number.min;
  number.dispatch("input");
  const first = title();
  number.value = number.max;
  number.dispatch("input");
  assert.notEqual(title(), first);
  assert.equal(title(), many.items.at(-1).title);
  assert.equal(evidenceCanvasHeight(data.items), 110 + 26 * Math.max(...many.items.map((c) => c.bars.length)));
});
