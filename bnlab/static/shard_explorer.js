// Lesson 12's shard explorer: per-device BN is ghost BN. One feature of a fixed sample split over W
// devices, iid or sorted by class, in equal or unequal shards. Per move, in the browser: every
// device's mean and variance, their plain average, the count-weighted parts of the law of total
// variance and Chan's combine (what SyncBatchNorm computes, the whole batch's statistics exactly);
// ShardExplorer.moments computes the same numbers.
import { FONT, explorerFrame, modelData, table } from "./explorer.js";
import { extent, mean, pyFixed, variance } from "./bn.js";

// n_r of each shard: n / W each ("equal"), or proportional to r + 1 ("unequal"), the boundaries
// floor(n (r + 1)(r + 2) / (W (W + 1))) as ShardExplorer.shard_sizes_for has them (integers: exact)
export function shardSizes(n, devices, sizes) {
  if (sizes === "equal") {
    if (n % devices) throw new RangeError(`${n} values do not split into ${devices} equal shards`);
    return new Array(devices).fill(n / devices);
  }
  if (sizes !== "unequal") throw new RangeError(`sizes must be "equal" or "unequal", got ${sizes}`);
  const out = [];
  let previous = 0;
  for (let r = 0; r < devices; r++) {
    const bound = Math.floor((n * (r + 1) * (r + 2)) / (devices * (devices + 1)));
    out.push(bound - previous);
    previous = bound;
  }
  return out;
}

// Horizontal offsets in (-0.25, 0.25) device widths for a strip of dots (a golden-ratio sequence: even,
// and the same on every redraw), as bnlab.widgets._strip_jitter
export function stripJitter(count) {
  return Array.from({ length: count }, (_, i) => (((i * 0.6180339887498949) % 1) - 0.5) * 0.5);
}

// The shards at the settings and their moments: per device values, classes, n_r, mu_r, sigma^2_r
// (biased, BN's) and M2_r = n_r sigma^2_r; the whole batch's mu_B, sigma^2_B; the plain average
// 1/W sum_r of mu_r and sigma^2_r; within = sum_r (n_r/N) sigma^2_r and between = sum_r (n_r/N)
// (mu_r - mu_B)^2, which add up to sigma^2_B; and Chan's combine mu = sum_r n_r mu_r / N,
// M2 = sum_r M2_r + sum_r n_r (mu_r - mu)^2, var = M2 / N (= sigma^2_B).
export function shardMoments(data, { devices, sharding, sizes }) {
  const order = data.orders[sharding];
  if (!order) throw new RangeError(`sharding ${sharding} is not one of ${Object.keys(data.orders).join(", ")}`);
  if (!data.devices.includes(devices)) throw new RangeError(`${devices} devices is not one of ${data.devices.join(", ")}`);
  const counts = shardSizes(order.length, devices, sizes);
  const shards = [];
  let start = 0;
  for (const n of counts) {
    const index = order.slice(start, start + n);
    shards.push({ values: index.map((i) => data.values[i]), classes: index.map((i) => data.classes[i]) });
    start += n;
  }
  const means = shards.map((s) => mean(s.values));
  const variances = shards.map((s) => variance(s.values));
  const m2s = variances.map((v, r) => counts[r] * v);
  const N = counts.reduce((s, n) => s + n, 0);
  const globalMean = mean(data.values), globalVar = variance(data.values);
  let combinedMean = 0;
  for (let r = 0; r < devices; r++) combinedMean += counts[r] * means[r];
  combinedMean /= N;
  let m2 = 0, within = 0, between = 0;
  for (let r = 0; r < devices; r++) {
    m2 += m2s[r] + counts[r] * (means[r] - combinedMean) ** 2;
    within += (counts[r] / N) * variances[r];
    between += (counts[r] / N) * (means[r] - globalMean) ** 2;
  }
  return {
    devices, shards, counts, means, variances, m2s,
    global: { mean: globalMean, var: globalVar },
    plainAverage: { mean: mean(means), var: mean(variances) },
    within, between,
    combined: { mean: combinedMean, var: m2 / N, m2 },
  };
}

// The classes a device holds, as the readout lists them: "3" or "0, 1, 2", else "7 classes"
export function deviceClasses(labels) {
  const distinct = [...new Set(labels)].sort((a, b) => a - b);
  return distinct.length <= 3 ? distinct.join(", ") : `${distinct.length} classes`;
}

// The finding, as ShardExplorer.title writes it
export function shardTitle(m, { devices, sharding, sizes }) {
  if (devices === 1) return "1 device: its shard is the whole batch, so per-device BN is global BN";
  const v = m.global.var;
  return `${devices} ${sizes} shards, ${sharding}: per-device BN normalizes with ${pyFixed((100 * m.within) / v, 0)}% `
    + `of the batch variance; the spread of the device means is the other ${pyFixed((100 * m.between) / v, 0)}%`;
}

export function shardReadout(m) {
  const g = m.global.var;
  const f = (x) => pyFixed(x, 4);
  const share = (x) => `${pyFixed((100 * x) / g, 1)}%`;
  const rows = {
    "whole batch, all N values on one device: μ_B, σ²_B": [f(m.global.mean), f(g), share(g)],
    "per device, plain average (1/W) Σ_r μ_r, σ²_r": [f(m.plainAverage.mean), f(m.plainAverage.var),
                                                       share(m.plainAverage.var)],
    "per device, weighted Σ_r (n_r/N) σ²_r: what per-device BN divides by": ["", f(m.within), share(m.within)],
    "the shortfall: variance of the device means Σ_r (n_r/N)(μ_r − μ_B)²": ["", f(m.between), share(m.between)],
    "Chan's combine of every (n_r, μ_r, M2_r), as SyncBN": [f(m.combined.mean), f(m.combined.var),
                                                             share(m.combined.var)],
  };
  const perDevice = {
    "n_r": m.counts.map(String),
    "μ_r": m.means.map(f),
    "σ²_r": m.variances.map(f),
    "classes": m.shards.map((s) => deviceClasses(s.classes)),
  };
  return table(rows, ["", "mean", "variance", "of σ²_B"])
    + table(perDevice, ["device r", ...m.counts.map((_, r) => String(r + 1))]);
}

// the strip panel's value axis, as ShardExplorer.value_limits: the range padded by 5% below and 35%
// above, where the legend goes
export function valueLimits(values) {
  const [lo, hi] = extent(values);
  const span = hi > lo ? hi - lo : 1;
  return [lo - 0.05 * span, hi + 0.35 * span];
}

// the largest variance any setting shows (a device's or the batch's): the bar panel's fixed scale
export function largestVariance(data) {
  let most = variance(data.values);
  for (const devices of data.devices) {
    for (const sharding of data.shardings) {
      for (const sizes of data.sizes) {
        for (const v of shardMoments(data, { devices, sharding, sizes }).variances) most = Math.max(most, v);
      }
    }
  }
  return most;
}

function rect(ax, x0, x1, y0, y1, color, alpha = 0.9) {
  ax.clip((ctx) => {
    ctx.fillStyle = color; ctx.globalAlpha = alpha;
    const a = ax.px(x0), b = ax.px(x1), top = ax.py(y1), bottom = ax.py(y0);
    ctx.fillRect(Math.min(a, b), Math.min(top, bottom), Math.abs(b - a), Math.abs(bottom - top));
  });
}

function drawStrip(ax, data, m, ylim) {
  const W = m.devices;
  const ticks = Array.from({ length: W }, (_, r) => r + 1);
  ax.setup({ xlim: [0.5, W + 0.5], ylim, xticks: ticks, xlabel: "device r", ylabel: data.feature,
             title: "Each device's shard and its statistics" });
  const { mean: mu, var: v } = m.global;
  const s = Math.sqrt(v);
  ax.band([0.5, W + 0.5], [mu - s, mu - s], [mu + s, mu + s], { color: data.colors.bn, alpha: 0.12 });
  ax.hline(mu, { color: data.colors.bn, width: 1.5, dash: [] });
  m.shards.forEach((shard, r) => {
    const jitter = stripJitter(shard.values.length);
    ax.points(jitter.map((j) => r + 0.9 + 0.8 * j), shard.values,
              { color: data.device_colors[r % data.device_colors.length], size: 3 });
    const x = r + 1.25, sr = Math.sqrt(m.variances[r]), color = data.colors.gbn;
    ax.line([x, x], [m.means[r] - sr, m.means[r] + sr], { color, width: 1.5 });
    for (const y of [m.means[r] - sr, m.means[r] + sr]) ax.line([x - 0.08, x + 0.08], [y, y], { color, width: 1.5 });
    ax.points([x], [m.means[r]], { color, size: 6 });
  });
  ax.legend([{ label: "whole batch: μ_B ± σ_B (SyncBN)", color: data.colors.bn },
             { label: "device: μ_r ± σ_r (per-device BN)", color: data.colors.gbn }], { corner: "upper right" });
}

function drawBars(ax, data, m, top) {
  const W = m.devices, sum = W + 1.5;
  const ticks = Array.from({ length: W }, (_, r) => r + 1);
  ax.setup({ xlim: [0.4, W + 2.2], ylim: [0, top], xticks: ticks, xlabel: "device r",
             ylabel: "variance σ² (feature units²)", title: "σ²_B = per-device variance + variance of the means" });
  m.variances.forEach((v, r) => rect(ax, r + 0.6, r + 1.4, 0, v, data.device_colors[r % data.device_colors.length], 0.85));
  rect(ax, sum - 0.4, sum + 0.4, 0, m.within, data.colors.gbn);
  rect(ax, sum - 0.4, sum + 0.4, m.within, m.within + m.between, data.colors.mistake);
  ax.hline(m.global.var, { color: data.colors.bn, width: 1.5, dash: [] });
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  ctx.fillText("sum", ax.px(sum), box.y + box.h + 6);
  ctx.restore();
  ax.legend([{ label: "Σ (n_r/N) σ²_r: per-device", color: data.colors.gbn, kind: "box" },
             { label: "Σ (n_r/N)(μ_r − μ_B)²: device means", color: data.colors.mistake, kind: "box" },
             { label: "σ²_B of the whole batch", color: data.colors.bn }], { corner: "upper right" });
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const ylim = valueLimits(data.values);
  // room above the tallest bar for the legend
  const top = 1.5 * largestVariance(data);
  const specs = [
    { name: "devices", label: "devices W", kind: "options", options: data.devices, value: v0.devices, main: true,
      width: "220px", format: (w) => String(w) },
    { name: "sharding", label: "sharding", kind: "select", options: data.shardings, value: v0.sharding },
    { name: "sizes", label: "shard sizes", kind: "select", options: data.sizes, value: v0.sizes },
  ];
  explorerFrame(el, "ShardExplorer", specs, (v, figure) => {
    const m = shardMoments(data, v);
    figure.suptitle(shardTitle(m, v));
    const [left, right] = figure.panels(2, 1, { top: 48, left: 62 });
    drawStrip(left, data, m, ylim);
    drawBars(right, data, m, top);
    return shardReadout(m);
  }, { width: 940, height: 380 });
}

export default { render };
