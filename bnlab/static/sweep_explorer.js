// Lessons 06 and 08: recorded runs over one swept setting (a learning rate, a batch size). Left, each
// variant's test accuracy or training loss during training at the chosen setting; right, every
// variant's final accuracy against the setting, the choice marked. Picking the setting's runs and
// scaling the axes happen here on every move; nothing is retrained.
import { FONT, explorerFrame, modelData, paddedRange, table } from "./explorer.js";
import { formatG, mean } from "./bn.js";

// What the panels draw at setting index i: per variant its run (curves, divergence, readout numbers)
// and, over all settings, the final accuracy's mean and min-max over seeds.
export function sweepAt(data, i) {
  const runs = {};
  const finals = {};
  for (const key of data.variants) {
    const run = data.runs[key][i];
    runs[key] = {
      ...run,
      loss: run.loss.map((v) => (v === null ? NaN : v)),
      finalAccuracy: run.accuracy.length ? run.accuracy.at(-1) : NaN,
    };
    const ys = data.finals[key].map((seeds) => seeds.map((v) => (v === null ? NaN : v)));
    finals[key] = {
      mean: ys.map((y) => mean(y)),
      min: ys.map((y) => Math.min(...y)),
      max: ys.map((y) => Math.max(...y)),
      spread: ys.some((y) => y.length > 1),
    };
  }
  return { runs, finals };
}

// Ticks of a log axis of any base: the powers of base covering [lo, hi], every k-th one where
// there would be more than `most`.
export function sweepLogTicks(lo, hi, base, most = 8) {
  const log = (v) => Math.log(v) / Math.log(base);
  const a = Math.floor(log(lo) + 1e-9), b = Math.ceil(log(hi) - 1e-9);
  const stride = Math.max(1, Math.ceil((b - a + 1) / most));
  const out = [];
  for (let e = a; e <= b; e += stride) out.push(base ** e);
  return out;
}

// matplotlib's default limits: the data's range padded by 5% on each side, on a log axis in log space
export function sweepLimits(values, log = false) {
  if (!log) return paddedRange(values, 0.05);
  const logs = [];
  for (const v of values) if (Number.isFinite(v) && v > 0) logs.push(Math.log10(v));
  const [lo, hi] = paddedRange(logs, 0.05);
  return [10 ** lo, 10 ** hi];
}

// Where the entries of a legend row go: widths in pixels laid out left to right, wrapped at
// `available`, each line centred. Returns [{x, line}] (x from the row's left edge) and the line count.
export function sweepLegendLayout(widths, available, gap = 22) {
  const lines = [[]];
  let used = 0;
  widths.forEach((w, i) => {
    if (lines.at(-1).length && used + gap + w > available) { lines.push([]); used = 0; }
    used += (lines.at(-1).length ? gap : 0) + w;
    lines.at(-1).push(i);
  });
  const out = new Array(widths.length);
  lines.forEach((indices, line) => {
    const total = indices.reduce((s, i) => s + widths[i], 0) + gap * (indices.length - 1);
    let x = (available - total) / 2;
    for (const i of indices) { out[i] = { x, line }; x += widths[i] + gap; }
  });
  return { positions: out, lines: lines.length };
}

// One legend for both panels, in a row under them (the variants have one colour in both): a legend
// inside either panel would hide curves, which fill every corner in lessons 06 and 08.
function legendLayout(figure, items) {
  const ctx = figure.ctx;
  ctx.save();
  ctx.font = FONT;
  const widths = items.map((it) => 26 + ctx.measureText(it.label).width);
  ctx.restore();
  return sweepLegendLayout(widths, figure.width - 20);
}

function legendRow(figure, items, { positions }, y) {
  const ctx = figure.ctx;
  ctx.save();
  ctx.font = FONT;
  items.forEach((it, i) => {
    const x = 10 + positions[i].x, cy = y + positions[i].line * 18;
    ctx.strokeStyle = it.color; ctx.lineWidth = 2; ctx.setLineDash(it.dash ?? []);
    ctx.beginPath(); ctx.moveTo(x, cy); ctx.lineTo(x + 20, cy); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    ctx.fillText(it.label, x + 26, cy);
  });
  ctx.restore();
}

// a log axis of the given base: setup without x ticks, then the powers of the base, labelled plainly
function setupSweepAxis(ax, options, base) {
  ax.setup({ ...options, xticks: [] });
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const t of sweepLogTicks(...ax.xlim, base)) {
    const px = ax.px(t);
    if (px < box.x - 0.5 || px > box.x + box.w + 0.5) continue;
    ctx.strokeStyle = "#e6e6e6"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(px, box.y); ctx.lineTo(px, box.y + box.h); ctx.stroke();
    ctx.strokeStyle = "#444";
    ctx.beginPath(); ctx.moveTo(px, box.y + box.h); ctx.lineTo(px, box.y + box.h + 4); ctx.stroke();
    ctx.fillText(formatG(t, 3), px, box.y + box.h + 6);
  }
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.restore();
}

function circles(ax, xs, ys, color, radius = 3) {
  ax.clip((ctx) => {
    ctx.fillStyle = color;
    for (let i = 0; i < xs.length; i++) {
      if (!Number.isFinite(ys[i])) continue;
      ctx.beginPath(); ctx.arc(ax.px(xs[i]), ax.py(ys[i]), radius, 0, 2 * Math.PI); ctx.fill();
    }
  });
}

// plot_curves' mark of a diverged run: an X in the run's colour at its step, on the bottom edge
function divergedMark(ax, step, color) {
  const { ctx, box } = ax;
  const x = ax.px(step), y = box.y + box.h * 0.96, r = 5;
  ctx.save();
  ctx.lineCap = "round";
  for (const [w, c] of [[4.5, "#000"], [3, color]]) {
    ctx.strokeStyle = c; ctx.lineWidth = w;
    ctx.beginPath();
    ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r); ctx.moveTo(x - r, y + r); ctx.lineTo(x + r, y - r);
    ctx.stroke();
  }
  ctx.restore();
}

// the left panel's curves (loss per step from step 1, or test accuracy at the evaluations) and its
// limits as matplotlib's autoscale finds them: the data padded by 5%, a divergence mark's step included
export function sweepCurves(data, picked, quantity) {
  const loss = quantity === "training loss";
  const series = data.variants.map((key) => {
    const run = picked.runs[key];
    const xs = loss ? run.loss.map((_, i) => i + 1) : run.eval_steps;
    return { key, run, xs, ys: loss ? run.loss : run.accuracy };
  });
  const allX = series.flatMap((s) => (s.run.diverged_at != null ? [...s.xs, s.run.diverged_at] : s.xs));
  const allY = series.flatMap((s) => s.ys);
  return { loss, series, xlim: sweepLimits(allX), ylim: sweepLimits(allY, loss) };
}

function drawCurves(ax, data, picked, quantity, title) {
  const { loss, series, xlim, ylim } = sweepCurves(data, picked, quantity);
  ax.setup({ xlim, ylim, ylog: loss, xlabel: "training step",
             ylabel: loss ? "training loss (cross-entropy)" : "test accuracy", title });
  for (const s of series) ax.line(s.xs, s.ys, { color: data.colors[s.key], width: loss ? 1 : 1.5 });
  for (const s of series) if (s.run.diverged_at != null) divergedMark(ax, s.run.diverged_at, data.colors[s.key]);
}

// the legend's entries, as plot_curves and plot_sweep label them: a diverged run says where
export function sweepLegend(data, picked) {
  const items = data.variants.map((key) => {
    const at = picked.runs[key].diverged_at;
    return { label: data.labels[key] + (at != null ? ` (diverged at step ${at})` : ""), color: data.colors[key] };
  });
  if (data.chance !== null) items.push({ label: "chance", color: "#000", dash: [1.5, 2.5] });
  return items;
}

// the right panel's limits: the settings, and the finals' band (their mean where one seed) and chance
export function sweepFinalsLimits(data, picked) {
  const ys = data.variants.flatMap((key) => [...picked.finals[key].min, ...picked.finals[key].max]);
  if (data.chance !== null) ys.push(data.chance);
  return { xlim: sweepLimits(data.values, Boolean(data.log_base)), ylim: sweepLimits(ys) };
}

function drawSweep(ax, data, picked, i) {
  const base = data.log_base;
  const xs = data.values;
  const { xlim, ylim } = sweepFinalsLimits(data, picked);
  const options = { xlim, ylim, xlog: Boolean(base),
                    xlabel: data.setting, ylabel: "final test accuracy",
                    title: `Final test accuracy against ${data.setting}` };
  if (base) setupSweepAxis(ax, options, base); else ax.setup(options);
  for (const key of data.variants) {
    const f = picked.finals[key], color = data.colors[key];
    if (f.spread) ax.band(xs, f.min, f.max, { color, alpha: 0.15 });
    ax.line(xs, f.mean, { color, width: 1.5 });
    circles(ax, xs, f.mean, color);
  }
  if (data.chance !== null) ax.hline(data.chance, { color: "#000", dash: [1.5, 2.5] });
  ax.vline(xs[i], { color: "rgba(0, 0, 0, 0.5)", width: 0.8, dash: [] });
}

// the readout: each variant's final test accuracy and last loss at the setting (its label as Python prints it)
export function sweepReadout(data, picked, i) {
  const rows = {};
  for (const key of data.variants) {
    const run = picked.runs[key];
    rows[data.labels[key]] = [run.finalAccuracy.toFixed(3),
                              run.diverged_at != null ? "diverged" : run.last_loss.toFixed(3)];
  }
  return table(rows, [`${data.setting} = ${data.value_labels[i]}`, "final test accuracy", "last loss"]);
}

function render({ model, el }) {
  const data = modelData(model);
  const specs = [
    { name: "value", label: data.setting, kind: "options", options: data.values.map((_, i) => i),
      value: data.initial.index, main: true, width: "260px", format: (i) => data.value_labels[i] },
    { name: "quantity", label: "left panel", kind: "select", options: ["test accuracy", "training loss"],
      value: data.initial.quantity },
  ];
  explorerFrame(el, "SweepExplorer", specs, (v, figure) => {
    const i = v.value;
    const picked = sweepAt(data, i);
    const items = sweepLegend(data, picked);
    const layout = legendLayout(figure, items);
    const [left, right] = figure.panels(2, 1, { top: 30, left: 62, bottom: 50 + layout.lines * 18 });
    drawCurves(left, data, picked, v.quantity, `${data.setting} = ${data.value_labels[i]}`);
    drawSweep(right, data, picked, i);
    legendRow(figure, items, layout, figure.height - layout.lines * 18 + 1);
    return sweepReadout(data, picked, i);
  }, { width: 920, height: 370 });
}

export default { render };
