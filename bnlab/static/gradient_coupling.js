// Lesson 02's coupling explorer: dL/dx per sample for one feature with BN in training (batch
// statistics) and with its statistics held fixed (eval mode), and BN's dx split into the three terms
// of the compact formula. Per move, in the browser: BN's forward on the recorded batch x[:m], the
// upstream pattern dy, and the terms, the same numbers as GradientCoupling.compute and .terms.
import { FONT, explorerFrame, modelData, paddedRange } from "./explorer.js";
import { batchnormBackwardTerms, batchnormForward, formatG } from "./bn.js";

function sum(values) {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

// dy (m values) for a pattern, as GradientCoupling.upstream: x the first m recorded values, noise
// the recorded N(0, 1) draw, xHat BN's x_hat of x
export function upstreamGradient(pattern, x, noise, xHat) {
  const m = x.length;
  const oneHot = (i) => Array.from({ length: m }, (_, j) => (j === i ? 1 : 0));
  switch (pattern) {
    case "only sample 0": return oneHot(0);
    case "two samples": return oneHot(0).map((v, j) => (j === 1 ? -1 : v));
    case "only the largest sample": {
      let largest = 0;   // the first of equal maxima, as numpy.argmax
      for (let j = 1; j < m; j++) if (x[j] > x[largest]) largest = j;
      return oneHot(largest);
    }
    case "constant": return new Array(m).fill(1);
    case "proportional to x_hat": return Array.from(xHat);
    case "random": return noise.slice(0, m);
    default: throw new RangeError(`unknown upstream pattern ${JSON.stringify(pattern)}`);
  }
}

// Everything one move shows: x, x_hat and dy; dx with batch statistics (the sum of the three terms)
// and with statistics held fixed (gamma dy / sqrt(var + eps)); the terms; and the readout's sums.
export function coupling(data, { batch_size: m, pattern, gamma }) {
  if (!(Number.isInteger(m) && m >= 2 && m <= data.x.length)) {
    throw new RangeError(`batch_size must be in 2..${data.x.length} (the recorded batch), got ${m}`);
  }
  const x = data.x.slice(0, m);
  const bn = batchnormForward(x, gamma, 0, data.eps);
  const dy = upstreamGradient(pattern, x, data.noise, bn.xHat);
  const t = batchnormBackwardTerms(bn.xHat, dy, gamma, bn.invStd);
  const dxFixed = dy.map((d) => gamma * bn.invStd * d);
  const sums = {
    dx: sum(t.dx), dxXhat: sum(t.dx.map((d, i) => d * bn.xHat[i])), fixed: sum(dxFixed),
    own: sum(t.own), mean: sum(t.mean), scale: sum(t.scale),
  };
  return { x, xHat: bn.xHat, dy, dx: t.dx, dxFixed, terms: { own: t.own, mean: t.mean, scale: t.scale }, sums };
}

const sign = (x) => (x < 0 || Object.is(x, -0) ? "-" : "+");

// Python's format(x, "+.{p}e") and format(x, "+.{p}g"): always a sign, a two-digit exponent at least
export function signedE(x, p = 2) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : `${sign(x)}inf`;
  const [mantissa, e] = Math.abs(x).toExponential(p).split("e");
  const n = Number(e);
  return `${sign(x)}${mantissa}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
}

export function signedG(x, p = 3) {
  return Number.isNaN(x) ? "nan" : sign(x) + formatG(Math.abs(x), p);
}

export function signedF(x, p = 3) {
  return Number.isNaN(x) ? "nan" : sign(x) + Math.abs(x).toFixed(p);
}

// The readout under the figure: the sums that show sum dx = 0 with batch statistics only
export function couplingReadout(r, termNames) {
  const names = termNames.map((t) => t.split(":")[0]);
  const termSums = [r.sums.own, r.sums.mean, r.sums.scale]
    .map((s, k) => `Σ ${names[k]} = ${signedG(s, 3)}`).join(" &nbsp; ");
  return `<p>with batch statistics: <b>Σ dx = ${signedE(r.sums.dx, 2)}</b> (≈ 0), `
    + `Σ dx·x̂ = ${signedE(r.sums.dxXhat, 2)} &nbsp;|&nbsp; statistics fixed: Σ dx = ${signedF(r.sums.fixed, 3)}</p>`
    + `<p>the terms summed over the batch: ${termSums} (own and mean cancel; Σ x̂ = 0 removes the scale term)</p>`;
}

function sampleTicks(m) {
  const stride = Math.max(1, Math.ceil(m / 12));
  const ticks = [];
  for (let i = 0; i < m; i += stride) ticks.push(i);
  return ticks;
}

// grouped bars, one group per sample i, as plots._per_sample_bars: series [{label, values, color}].
// Returns the bars' rectangles in pixels, for placing the legend.
function perSampleBars(ax, series, m, ylabel, title, extra = []) {
  const all = [0, ...series.flatMap((s) => s.values), ...extra];
  const width = 0.8 / series.length;
  const xs = Array.from({ length: m }, (_, i) => i);
  ax.setup({ xlim: [-0.6, m - 0.4], ylim: paddedRange(all, 0.08), xticks: sampleTicks(m),
             xlabel: "sample index i in the batch", ylabel, title });
  const rects = [];
  series.forEach((s, k) => {
    const offset = (k - (series.length - 1) / 2) * width;
    ax.bars(xs, s.values, { color: s.color, width, offset, alpha: 1 });
    s.values.forEach((v, i) => {
      const [ya, yb] = [ax.py(0), ax.py(v)];
      rects.push({ x0: ax.px(i + offset - width / 2), x1: ax.px(i + offset + width / 2),
                   y0: Math.min(ya, yb), y1: Math.max(ya, yb) });
    });
  });
  ax.hline(0, { color: "#000", width: 0.8, dash: [] });
  return { xs, rects };
}

// The corner where the legend's box covers the least of the drawn rectangles (matplotlib's
// loc="best"); the box is sized as Axes.legend sizes it (widest label + 34 px, 16 px a line).
function quietCorner(ax, rects, labels) {
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT;
  const w = Math.max(...labels.map((label) => ctx.measureText(label).width)) + 34;
  ctx.restore();
  const h = labels.length * 16 + 6;
  let best = "upper right", least = Infinity;
  for (const corner of ["upper right", "upper left", "lower right", "lower left"]) {
    const x = corner.includes("left") ? box.x + 6 : box.x + box.w - w - 6;
    const y = corner.includes("lower") ? box.y + box.h - h - 6 : box.y + 6;
    let covered = 0;
    for (const r of rects) {
      const dx = Math.min(x + w, r.x1) - Math.max(x, r.x0), dy = Math.min(y + h, r.y1) - Math.max(y, r.y0);
      if (dx > 0 && dy > 0) covered += dx * dy;
    }
    if (covered < least) { least = covered; best = corner; }
  }
  return best;
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const [bMin, bMax, bStep] = data.limits.batch_size;
  const [gMin, gMax, gStep] = data.limits.gamma;
  const specs = [
    { name: "batch_size", label: "batch size m", kind: "range", min: bMin, max: bMax, step: bStep,
      value: v0.batch_size, main: true, width: "240px" },
    { name: "pattern", label: "upstream dL/dy", kind: "select", options: data.patterns, value: v0.pattern },
    { name: "gamma", label: "γ", kind: "range", min: gMin, max: gMax, step: gStep, value: v0.gamma, width: "200px",
      format: (g) => g.toFixed(1) },
  ];
  explorerFrame(el, "GradientCoupling", specs, (v, figure) => {
    const r = coupling(data, v);
    const m = r.x.length;
    const [left, right] = figure.panels(2, 1, { top: 46 });
    const variants = [
      { label: data.legend.plain, values: r.dxFixed, color: data.colors.plain },
      { label: data.legend.bn, values: r.dx, color: data.colors.bn },
    ];
    const bars = perSampleBars(left, variants, m, "dL/dx_i",
                               "BN (training) couples the samples:\nits gradients sum to zero");
    const variantItems = variants.map((s) => ({ label: s.label, color: s.color, kind: "box" }));
    left.legend(variantItems, { corner: quietCorner(left, bars.rects, variantItems.map((it) => it.label)) });
    const terms = [r.terms.own, r.terms.mean, r.terms.scale].map((values, k) => (
      { label: data.terms[k], values, color: data.term_colors[k % data.term_colors.length] }));
    const { xs, rects } = perSampleBars(right, terms, m, "contribution to dL/dx_i",
                                        "dx_i = own + mean + scale term;\nsummed over the batch they cancel: Σ dx = 0",
                                        r.dx);
    right.points(xs, r.dx, { color: "#000", size: 6 });
    const dots = xs.map((x, i) => ({ x0: right.px(x) - 3, x1: right.px(x) + 3, y0: right.py(r.dx[i]) - 3,
                                     y1: right.py(r.dx[i]) + 3 }));
    const termItems = [...terms.map((s) => ({ label: s.label, color: s.color, kind: "box" })),
                       { label: "their sum dx_i", color: "#000", kind: "dots" }];
    right.legend(termItems, { corner: quietCorner(right, [...rects, ...dots], termItems.map((it) => it.label)) });
    return couplingReadout(r, data.terms);
  }, { width: 900, height: 340 });
}

export default { render };
