// Lesson 11's sequence explorer: why a BN-LSTM keeps statistics per time step. At step t the hidden
// path's pre-activations W_hh h_(t-1) of a variant (before any norm) and the BN-LSTM's x_hat, normalized
// with step t's statistics or with one set for all steps; their variance over time with BN's running
// variance per step; each variant's test metric by test set (length). Per move, in the browser:
// picking the step's records, the title and the readout; SequenceExplorer.at_step gives the same.
import { FONT, explorerFrame, modelData, table } from "./explorer.js";
import { formatG, pyFixed } from "./bn.js";

// The records of step t for a variant (a colour key in data.variants), as SequenceExplorer.at_step:
// the histograms rawHist (the variant's a_h), stepHist and sharedHist (BN's x_hat with step t's and
// with the pooled statistics), the batch mean and variance of a_h (means over the gates shown), BN's
// running statistics of the step it uses (step T - 1 beyond T), the pooled ones and x_hat's RMS with either.
export function sequenceAt(data, { step, variant }) {
  if (!Number.isInteger(step) || step < 0 || step >= data.steps) {
    throw new RangeError(`step ${step} is not a time step 0..${data.steps - 1}`);
  }
  if (!data.variants.includes(variant)) throw new RangeError(`variant ${variant} is not one of ${data.variants.join(", ")}`);
  const raw = data.raw[variant], bn = data.bn, T = data.trained_steps;
  return {
    step, variant,
    rawHist: raw.hist[step], stepHist: bn.hist_step[step], sharedHist: bn.hist_shared[step],
    rawMean: raw.mean[step], rawVar: raw.var[step],
    bnMean: data.raw.bn.mean[step], bnVar: data.raw.bn.var[step],
    runningMean: bn.running_mean[step], runningVar: bn.running_var[step], statsStep: Math.min(step, T - 1),
    pooledMean: bn.pooled_mean, pooledVar: bn.pooled_var,
    rmsStep: bn.rms_step[step], rmsShared: bn.rms_shared[step], beyond: step >= T,
  };
}

// The finding at the step, as SequenceExplorer.title writes it: how far the compared variant's
// W_hh h_(t-1) has come (its variance against the last trained step's) and x_hat's RMS with BN's
// statistics of the step and with one set for all steps
export function sequenceTitle(data, s) {
  const T = data.trained_steps, t = s.step;
  if (t === 0) return "Step 0: h_0 = 0, so W_hh h_(t−1) is 0 in every sequence: nothing to normalize yet";
  const where = s.beyond ? `Step ${t} (beyond the ${T} trained steps)` : `Step ${t}`;
  const lastStep = Math.min(T, data.steps) - 1;
  const last = data.raw[s.variant].var[lastStep];
  const drift = last > 0 ? `${data.labels[s.variant]}, Var W_hh h_(t−1) is ${pyFixed((100 * s.rawVar) / last, 0)}% `
    + `of step ${lastStep}'s; ` : "";
  return `${where}: ${drift}BN's step-${s.statsStep} statistics give x̂ an RMS of ${pyFixed(s.rmsStep, 2)} `
    + `(one set for all steps: ${pyFixed(s.rmsShared, 2)})`;
}

// which gates the numbers average over: "all 32 units, gates i, f, g, o" or "unit 0, gates ..."
export function gatesCaption(data) {
  const gates = `gates ${data.gates.join(", ")}`;
  if (data.units === null) return `all ${data.hidden_size} units, ${gates}`;
  return `${data.units.length > 1 ? "units" : "unit"} ${data.units.join(", ")}, ${gates}`;
}

export function sequenceReadout(data, s) {
  const g = (x) => formatG(x, 3);
  const rows = { [`${data.labels[s.variant]}: W_hh h_(t−1) on the test batch`]: [g(s.rawMean), g(s.rawVar)] };
  if (s.variant !== "bn") rows[`${data.labels.bn}: W_hh h_(t−1) on the test batch`] = [g(s.bnMean), g(s.bnVar)];
  rows[`BN-LSTM: running statistics of step ${s.statsStep}`] = [g(s.runningMean), g(s.runningVar)];
  rows[`one set for all steps (pooled over steps 0–${data.trained_steps - 1})`] = [g(s.pooledMean), g(s.pooledVar)];
  let html = table(rows, [`step ${s.step} (${gatesCaption(data)})`, "mean", "variance"]);
  if (data.tests.length) {
    const metrics = {};
    for (const [key, values] of Object.entries(data.metrics)) metrics[data.labels[key]] = values.map((v) => pyFixed(v, 4));
    html += table(metrics, [data.metric, ...data.tests]);
  }
  return html;
}

// a histogram's outline: the corners of its steps
export function stepOutline(edges, fractions) {
  const xs = [], ys = [];
  fractions.forEach((f, i) => { xs.push(edges[i], edges[i + 1]); ys.push(f, f); });
  return { xs, ys };
}

// the bars' x positions: test set g at x = g, the K variants side by side in 0.8 of its width
export function barPositions(data) {
  const keys = Object.keys(data.metrics), width = 0.8 / keys.length;
  const out = {};
  keys.forEach((key, j) => { out[key] = data.tests.map((_, g) => g - 0.4 + width * (j + 0.5)); });
  return { width, positions: out };
}

function rect(ax, x0, x1, y0, y1, color, alpha) {
  ax.clip((ctx) => {
    ctx.fillStyle = color; ctx.globalAlpha = alpha;
    const a = ax.px(x0), b = ax.px(x1), top = ax.py(y1), bottom = ax.py(y0);
    ctx.fillRect(Math.min(a, b), Math.min(top, bottom), Math.abs(b - a), Math.abs(bottom - top));
  });
}

function drawHistograms(ax, data, s) {
  const edges = data.edges;
  const top = 1.15 * Math.max(...s.rawHist, ...s.stepHist, ...s.sharedHist, 1e-3);
  ax.setup({ xlim: [edges[0], edges.at(-1)], ylim: [0, top], xlabel: "W_hh h_(t−1) (filled), x̂ (lines)",
             ylabel: "fraction of values per bin", title: `At step ${s.step}` });
  ax.stairs(edges, s.rawHist, { color: data.colors[s.variant], alpha: 0.45 });
  const own = stepOutline(edges, s.stepHist), shared = stepOutline(edges, s.sharedHist);
  ax.line(own.xs, own.ys, { color: data.colors.bn, width: 1.8 });
  ax.line(shared.xs, shared.ys, { color: data.colors.running, width: 1.5, dash: [5, 3] });
  ax.legend([{ label: `${data.labels[s.variant]}: W_hh h_(t−1)`, color: data.colors[s.variant], kind: "box" },
             { label: "BN-LSTM x̂, step t's statistics", color: data.colors.bn },
             { label: "x̂, one set for all steps", color: data.colors.running, dash: [5, 3] }],
            { corner: "upper left" });
}

// the variance panel's scale for a variant, the same at every step (as SequenceExplorer.variance_limit):
// the curves it draws, with room above them for the legend
export function varianceLimit(data, variant) {
  const all = [...data.raw[variant].var, ...data.raw.bn.var, ...data.bn.running_var, data.bn.pooled_var];
  return 1.6 * Math.max(...all, 1e-12);
}

function drawCurves(ax, data, s) {
  const top = varianceLimit(data, s.variant);
  const ts = Array.from({ length: data.steps }, (_, t) => t);
  ax.setup({ xlim: [0, Math.max(1, data.steps - 1)], ylim: [0, top], xlabel: "time step t",
             ylabel: "variance of W_hh h_(t−1) (mean over gates)", title: "Over time: per-step statistics follow it" });
  const items = [{ label: data.labels[s.variant], color: data.colors[s.variant] }];
  ax.line(ts, data.raw[s.variant].var, { color: data.colors[s.variant], width: 1.6 });
  if (s.variant !== "bn") {
    ax.line(ts, data.raw.bn.var, { color: data.colors.bn, width: 1.6 });
    items.push({ label: data.labels.bn, color: data.colors.bn });
  }
  ax.line(ts, data.bn.running_var, { color: data.colors.bn, width: 1.2, dash: [5, 3] });
  ax.hline(data.bn.pooled_var, { color: data.colors.running, width: 1.2, dash: [1.5, 2.5] });
  if (data.steps > data.trained_steps) ax.vline(data.trained_steps - 0.5, { color: "#888", dash: [] });
  ax.vline(s.step, { color: "#000" });
  items.push({ label: "BN's running σ²_t", color: data.colors.bn, dash: [5, 3] },
             { label: "one σ² for all steps", color: data.colors.running, dash: [1.5, 2.5] });
  ax.legend(items, { corner: "upper right" });
}

function drawBars(ax, data, s) {
  if (!data.tests.length) {
    ax.message("no test metrics given");
    return;
  }
  const { width, positions } = barPositions(data);
  const values = Object.values(data.metrics).flat();
  const top = 1.6 * Math.max(...values, data.chance ?? 0, 1e-12);
  ax.setup({ xlim: [-0.6, data.tests.length - 0.4], ylim: [0, top], xticks: [], xlabel: "test set",
             ylabel: data.metric, title: `${data.metric}, trained on ${data.trained_steps} steps` });
  const items = [];
  for (const [key, xs] of Object.entries(positions)) {
    const alpha = key === s.variant ? 0.95 : 0.45;
    xs.forEach((x, g) => rect(ax, x - width / 2, x + width / 2, 0, data.metrics[key][g], data.colors[key], alpha));
    items.push({ label: data.labels[key], color: data.colors[key], kind: "box" });
  }
  if (data.chance !== null) {
    ax.hline(data.chance, { color: "#000", dash: [1.5, 2.5] });
    items.push({ label: data.chance_label, color: "#000", dash: [1.5, 2.5] });
  }
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  data.tests.forEach((name, g) => ctx.fillText(name, ax.px(g), box.y + box.h + 6));
  ctx.restore();
  ax.legend(items, { corner: "upper left" });
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const byLabel = Object.fromEntries(data.variants.map((key) => [data.labels[key], key]));
  const specs = [
    { name: "step", label: "time step t", kind: "range", min: 0, max: data.steps - 1, step: 1, value: v0.step,
      main: true, width: "260px", format: (t) => String(t) },
    { name: "variant", label: "compare", kind: "select", options: Object.keys(byLabel),
      value: data.labels[v0.variant] },
  ];
  explorerFrame(el, "SequenceExplorer", specs, (v, figure) => {
    const s = sequenceAt(data, { step: v.step, variant: byLabel[v.variant] });
    figure.suptitle(sequenceTitle(data, s));
    const [left, middle, right] = figure.panels(3, 1, { top: 48, left: 60, gap: 20 });
    drawHistograms(left, data, s);
    drawCurves(middle, data, s);
    drawBars(right, data, s);
    return sequenceReadout(data, s);
  }, { width: 1000, height: 390 });
}

export default { render };
