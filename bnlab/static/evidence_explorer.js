// Lesson 13's evidence explorer: pick a claim about BN and see its verdict, why, where the course proves
// it and the numbers that proof measured, as bars of log10 |value|. Every claim is sent once; picking,
// filtering by verdict and drawing happen here. EvidenceExplorer's counts, filtered, label, bars,
// off_axis, limits and title compute what these functions do (tests/js/evidence_explorer.test.mjs).
import { FONT, explorerFrame, modelData } from "./explorer.js";
import { pyExp, pyFixed } from "./bn.js";

// JSON has no NaN or inf: Python sends them as it writes them
const NON_FINITE = { nan: NaN, inf: Infinity, "-inf": -Infinity };
// the characters Python's str.split() splits at (JavaScript's \s lacks \x1c-\x1f and \x85, adds \ufeff)
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

// A claim's numbers as [name, value] pairs in their order (an object would put names like "10" first)
export function evidenceNumbers(item) {
  return item.numbers.map(([name, v]) => {
    if (typeof v === "number") return [name, v];
    if (!(v in NON_FINITE)) throw new RangeError(`${item.id}: number ${name} is ${JSON.stringify(v)}, not a number`);
    return [name, NON_FINITE[v]];
  });
}

// Python's format(x, f".{p}g"), exact ties included (formatG rounds 12345 to 1.235e+04, Python to
// 1.234e+04): the exponent as format "e" rounds it, then "f" or "e" with trailing zeros dropped
export function pyG(x, p = 4) {
  if (x === null || Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  const strip = (s) => (s.includes(".") ? s.replace(/\.?0+$/, "") : s);
  const [mantissa, e] = pyExp(x, p - 1).split("e");
  const exponent = Number(e);
  if (exponent >= -4 && exponent < p) return strip(pyFixed(x, p - 1 - exponent));
  return `${strip(mantissa)}e${e}`;
}

// {verdict: how many claims have it} for every verdict, in data.verdicts' order
export function evidenceCounts(data) {
  const counts = Object.fromEntries(data.verdicts.map((v) => [v, 0]));
  for (const item of data.items) counts[item.verdict]++;
  return counts;
}

// the counts over all claims as EvidenceExplorer.counts_line writes them; swatch(verdict) goes before each
export function evidenceCountsLine(data, swatch = () => "") {
  const n = data.items.length, s = n === 1 ? "" : "s";
  const supported = data.items.filter((item) => item.passed).length;
  const counts = Object.entries(evidenceCounts(data)).map(([v, k]) => `${swatch(v)}${k} ${v}`).join(", ");
  return `all ${n} claim${s}: ${counts}; the evidence supports ${supported} of the ${n} verdict${s}`;
}

// the claims a filter of the menu keeps (data.filters: label -> verdict, null for all), in their order
export function evidenceFiltered(data, label) {
  if (!(label in data.filters)) throw new RangeError(`filter ${label} is not one of ${Object.keys(data.filters)}`);
  const verdict = data.filters[label];
  return data.items.filter((item) => verdict === null || item.verdict === verdict);
}

// the drop-down's entry: "id — " and the first `chars` characters (code points, as Python counts them)
// of the translation, else of the explanation, whitespace runs as one space, "…" where cut
export function evidenceLabel(item, chars = 60) {
  const text = Array.from((item.translation || item.explanation).split(PY_WHITESPACE).filter(Boolean).join(" "));
  const cut = text.slice(0, chars).join("") + (text.length > chars ? "…" : "");
  return cut ? `${item.id} — ${cut}` : item.id;
}

// the bars, top to bottom: [name, log10 |value|] of each finite nonzero number, the largest first
// (a stable sort: numbers of equal size keep their order, as Python's sorted)
export function evidenceBars(item) {
  return evidenceNumbers(item)
    .filter(([, v]) => Number.isFinite(v) && v !== 0)
    .map(([name, v]) => [name, Math.log10(Math.abs(v))])
    .sort((a, b) => b[1] - a[1]);
}

// [name, value] of the numbers no bar can show: nan, inf and 0 have no finite log10 |value|
export function evidenceOffAxis(item) {
  return evidenceNumbers(item).filter(([, v]) => !(Number.isFinite(v) && v !== 0));
}

// the log10 |value| axis: the bars' ends and 0 (|value| = 1), widened each side by a quarter of that
// span (at least 1), room for the values written at the ends
export function evidenceLimits(bars) {
  const logs = bars.map(([, b]) => b);
  const lo = Math.min(0, ...logs), hi = Math.max(0, ...logs);
  const pad = 0.25 * Math.max(hi - lo, 1);
  return [lo - pad, hi + pad];
}

export function evidenceTitle(item) {
  return `${item.id}: ${item.verdict} (the evidence ${item.passed ? "supports" : "does not support"} this verdict)`;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

const offText = (off) => off.map(([name, v]) => `${name} = ${pyG(v)}`).join(", ");

// what the claim is and what its proof found, over the figure
export function evidenceHeader(item, data) {
  const color = data.verdict_colors[item.verdict];
  const badge = `<span class='bnlab-verdict' style='background:${color}; color:#fff; font-weight:bold; `
    + `padding:1px 9px; border-radius:9px'>${esc(item.verdict)}</span>`;
  const swatch = (v) => `<span style='display:inline-block; width:10px; height:10px; margin-right:3px; `
    + `background:${data.verdict_colors[v]}'></span>`;
  const para = (html, style = "", attributes = "") => `<p${attributes} style='margin:3px 0; ${style}'>${html}</p>`;
  const mark = item.passed
    ? para("✓ the evidence supports the verdict", "color:#2ca02c; font-weight:bold")
    : para("✗ the evidence does not support the verdict", "color:#d62728; font-weight:bold");
  return para(`${badge} <b>${esc(item.id)}</b> <span style='color:#555'>(${esc(item.source)})</span>`)
    // dir='auto': a quote in a right-to-left language reads right to left
    + (item.quote ? para(`“${esc(item.quote)}”`, "font-style:italic; white-space:pre-wrap", " dir='auto'") : "")
    + (item.translation ? para(esc(item.translation), "white-space:pre-wrap") : "")
    + para(esc(item.explanation), "white-space:pre-wrap")
    + para(`proved in lesson ${esc(item.lesson)}: ${esc(item.summary)}`)
    + mark
    + para(evidenceCountsLine(data, swatch), "color:#555; font-size:12px");
}

// the numbers' table: name, value (4 significant digits, as Python's .4g), log10 |value| (2 decimals)
export function evidenceReadout(item) {
  const numbers = evidenceNumbers(item);
  if (!numbers.length) return "<p>this claim's proof records no numbers</p>";
  const cell = (c, right = true) => `<td style='padding:0 10px${right ? "; text-align:right" : ""}'>${c}</td>`;
  const head = ["number", "value", "log10 |value|"].map((h) => `<th style='padding:0 10px'>${esc(h)}</th>`).join("");
  const body = numbers.map(([name, v]) => {
    const log = Number.isFinite(v) && v !== 0 ? pyFixed(Math.log10(Math.abs(v)), 2) : "–";
    return `<tr>${cell(esc(name), false)}${cell(pyG(v))}${cell(log)}</tr>`;
  }).join("");
  return `<table><tr>${head}</tr>${body}</table>`;
}

// the canvas is sized once, for the claim with the most bars
export function evidenceCanvasHeight(items) {
  return 110 + 26 * Math.max(2, ...items.map((item) => evidenceBars(item).length));
}

// The claim to show after a control move. state: {filter, id, number} before it; values: the
// controls' now. A new filter keeps the claim where it passes, else shows its first; a moved slider
// picks the filtered list's claim of that number (1-based); else the drop-down's claim.
export function evidenceSelect(data, state, values) {
  const list = evidenceFiltered(data, values.filter);
  let id;
  if (values.filter !== state.filter) {
    id = list.some((item) => item.id === state.id) ? state.id : list[0].id;
  } else if (values.number !== state.number) {
    id = list[Math.min(list.length, Math.max(1, Math.round(values.number))) - 1].id;
  } else {
    id = values.claim;
  }
  const index = list.findIndex((item) => item.id === id);
  if (index < 0) throw new RangeError(`claim ${id} is not among the ${values.filter} claims`);
  return { filter: values.filter, id, number: index + 1, list, item: list[index] };
}

function drawChart(figure, item, color) {
  figure.suptitle(evidenceTitle(item));
  const bars = evidenceBars(item), off = evidenceOffAxis(item);
  const values = Object.fromEntries(evidenceNumbers(item));
  const { ctx } = figure;
  ctx.save();
  ctx.font = FONT;
  const widest = Math.max(0, ...bars.map(([name]) => ctx.measureText(name).width));
  ctx.restore();
  const [ax] = figure.panels(1, 1, { left: Math.min(320, Math.max(70, widest + 16)), right: 20, top: 48, bottom: 46 });
  if (!bars.length) {
    ax.message(off.length ? `no number has a finite log10 |value|:\n${offText(off)}` : "this claim's proof records no numbers");
    return;
  }
  const n = bars.length;
  ax.setup({ xlim: evidenceLimits(bars), ylim: [-0.6, n - 0.4], yticks: [], xlabel: "log10 |value|  (0: |value| = 1)",
             title: off.length ? `not on the log axis: ${offText(off)}` : "the proof's numbers, orders of magnitude from 1" });
  ax.vline(0, { color: "#444", width: 1, dash: [] });
  const { box } = ax;
  bars.forEach(([name, log], i) => {
    const y = n - 1 - i;
    const x0 = ax.px(0), x1 = ax.px(log), top = ax.py(y + 0.35), bottom = ax.py(y - 0.35);
    ax.clip((c) => {
      c.fillStyle = color; c.globalAlpha = 0.85;
      c.fillRect(Math.min(x0, x1), top, Math.abs(x1 - x0), bottom - top);
    });
    ctx.save();
    ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    ctx.fillText(name, box.x - 6, ax.py(y), box.x - 8);
    ctx.textAlign = log >= 0 ? "left" : "right";
    ctx.fillText(pyG(values[name]), x1 + (log >= 0 ? 4 : -4), ax.py(y));
    ctx.restore();
  });
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  let state = evidenceSelect(data, { filter: v0.filter, id: v0.item, number: 0 },
                             { filter: v0.filter, number: 0, claim: v0.item });
  const claimSpec = { name: "claim", label: "claim", kind: "select", options: state.list.map((it) => it.id),
                      value: state.id };
  const specs = [
    claimSpec,
    { name: "filter", label: "verdict", kind: "select", options: Object.keys(data.filters), value: state.filter },
    // the drop-down is the main control; a slider over the same claims lets e2e tests (and the keyboard) step
    { name: "number", label: "claim number", kind: "range", min: 1, max: state.list.length, step: 1,
      value: state.number, main: true, width: "240px", format: (k) => `${k} of ${state.list.length}` },
  ];
  const header = document.createElement("div");
  header.className = "bnlab-evidence";
  header.style.cssText = "margin:4px 0 6px; line-height:1.4; max-width:940px";
  let frame = null;
  // the drop-down lists the filtered claims, labelled; makeControl's select reads spec.options
  const fillClaims = (list) => {
    claimSpec.options.splice(0, claimSpec.options.length, ...list.map((it) => it.id));
    frame.controls.claim.input.replaceChildren(...list.map((it) => {
      const option = document.createElement("option");
      option.value = it.id;
      option.textContent = evidenceLabel(it, data.label_chars);
      return option;
    }));
  };
  const sync = (filterChanged) => {
    if (filterChanged) fillClaims(state.list);
    frame.controls.claim.set(state.id);
    frame.controls.number.input.max = state.list.length;
    frame.controls.number.set(state.number);
  };
  frame = explorerFrame(el, "EvidenceExplorer", specs, (v, figure) => {
    const filterChanged = v.filter !== state.filter;
    state = evidenceSelect(data, state, v);
    header.innerHTML = evidenceHeader(state.item, data);
    drawChart(figure, state.item, data.verdict_colors[state.item.verdict]);
    if (frame) sync(filterChanged);
    return evidenceReadout(state.item);
  }, { width: 940, height: evidenceCanvasHeight(data.items) });
  sync(true);
  // the header above the figure: the frame is controls, canvas, readout; flex order moves it up
  frame.root.appendChild(header);
  frame.root.style.display = "flex";
  frame.root.style.flexDirection = "column";
  frame.root.style.alignItems = "flex-start";
  frame.root.children[0].style.order = "0";
  header.style.order = "1";
  frame.canvas.style.order = "2";
  frame.readout.style.order = "3";
}

export default { render };
