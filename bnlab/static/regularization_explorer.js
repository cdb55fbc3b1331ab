// Lesson 10's regularization explorer: the train-test accuracy gap of a BN net against batch size,
// for a chosen dropout rate and weight decay, from a precomputed grid. Per move, in the browser:
// the seeds' gaps and their means, the batch size with the smallest gap, the title and readout;
// RegularizationExplorer computes the same.
import { FONT, explorerFrame, modelData, table } from "./explorer.js";
import { pyFixed } from "./bn.js";

// Per batch size (rows) the seeds' train and test accuracies and gaps at one dropout and weight
// decay, the mean gap per batch size and the batch size where it is smallest (the first of equals,
// as numpy's argmin).
export function gridCell(data, { dropout, weight_decay: weightDecay }) {
  const d = data.dropouts.indexOf(dropout);
  const w = data.weight_decays.indexOf(weightDecay);
  if (d < 0 || w < 0) throw new RangeError(`dropout ${dropout} or weight decay ${weightDecay} is not in the grid`);
  const train = data.train.map((row) => row[d][w]);
  const test = data.test.map((row) => row[d][w]);
  const gaps = train.map((t, i) => t.map((a, j) => a - test[i][j]));
  const means = gaps.map((g) => g.reduce((s, x) => s + x, 0) / g.length);
  let best = 0;
  for (let i = 1; i < means.length; i++) if (means[i] < means[best]) best = i;
  return { train, test, gaps, means, best: data.batch_sizes[best] };
}

export function regularizationTitle(data, cell, v) {
  const i = data.batch_sizes.indexOf(v.batch_size);
  return `Batch ${v.batch_size}, dropout ${v.dropout}, weight decay ${v.weight_decay}: train-test gap `
    + `${pyFixed(100 * cell.means[i], 1)} points (smallest at batch ${cell.best})`;
}

export function regularizationReadout(data, cell, v) {
  const i = data.batch_sizes.indexOf(v.batch_size);
  const rows = {};
  data.seeds.forEach((seed, j) => {
    rows[`seed ${seed}`] = [pyFixed(100 * cell.train[i][j], 1), pyFixed(100 * cell.test[i][j], 1),
                            pyFixed(100 * cell.gaps[i][j], 1)];
  });
  return table(rows, ["", "train accuracy (%)", "test accuracy (%)", "gap (points)"]);
}

// The batch sizes themselves as tick labels (the log axis's own ticks are powers of ten only)
function batchTicks(ax, xs) {
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.strokeStyle = "#444"; ctx.lineWidth = 1;
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (const b of xs) {
    const px = ax.px(b);
    ctx.beginPath(); ctx.moveTo(px, box.y + box.h); ctx.lineTo(px, box.y + box.h + 4); ctx.stroke();
    ctx.fillText(String(b), px, box.y + box.h + 6);
  }
  ctx.restore();
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const specs = [
    { name: "batch_size", label: "batch size", kind: "options", options: data.batch_sizes, value: v0.batch_size,
      main: true, width: "220px", format: (b) => String(b) },
    { name: "dropout", label: "dropout", kind: "select", options: data.dropouts, value: v0.dropout },
    { name: "weight_decay", label: "weight decay", kind: "select", options: data.weight_decays,
      value: v0.weight_decay },
    { name: "panel", label: "show", kind: "select", options: ["gap", "accuracy"], value: v0.panel },
  ];
  explorerFrame(el, "RegularizationExplorer", specs, (v, figure) => {
    const cell = gridCell(data, v);
    const xs = data.batch_sizes;
    const xlim = [xs[0] / 1.5, xs[xs.length - 1] * 1.5];
    const [ax] = figure.panels(1, 1, { top: 30, left: 64 });
    const title = regularizationTitle(data, cell, v);
    if (v.panel === "gap") {
      const all = cell.gaps.flat().map((g) => 100 * g);
      const hi = Math.max(1, ...all) * 1.1;
      const lo = Math.min(0, ...all);
      ax.setup({ xlim, ylim: [lo, hi], xlog: true, xticks: [], xlabel: "batch size", ylabel: "train − test accuracy (points)", title });
      data.seeds.forEach((_, j) => {
        ax.points(xs, cell.gaps.map((g) => 100 * g[j]), { color: data.colors.bn, size: 6, alpha: 0.6 });
      });
      ax.line(xs, cell.means.map((m) => 100 * m), { color: data.colors.bn, width: 2 });
      ax.legend([{ label: "mean over seeds", color: data.colors.bn }, { label: "each seed", color: data.colors.bn,
                                                                          kind: "dots" }], { corner: "upper right" });
    } else {
      const mean = (rows) => rows.map((r) => (100 * r.reduce((s, x) => s + x, 0)) / r.length);
      const train = mean(cell.train);
      const test = mean(cell.test);
      const lo = Math.min(...test, ...train);
      ax.setup({ xlim, ylim: [Math.max(0, lo - 5), 101], xlog: true, xticks: [], xlabel: "batch size",
                 ylabel: "accuracy (%), mean over seeds", title });
      ax.line(xs, train, { color: "#1f77b4", width: 2 });
      ax.line(xs, test, { color: "#d62728", width: 2 });
      ax.legend([{ label: "train", color: "#1f77b4" }, { label: "test", color: "#d62728" }], { corner: "lower right" });
    }
    batchTicks(ax, xs);
    ax.vline(v.batch_size, { color: "#000", width: 1, dash: [5, 3] });
    return regularizationReadout(data, cell, v);
  }, { width: 900, height: 340 });
}

export default { render };
