// Lesson 05's explorer: per-layer gradient norms at init with and without BN for the chosen depth,
// activation and init (the whole table is sent once), and test accuracy during training at the
// chosen learning rate where that configuration was trained; the train button asks the kernel for
// it (GradientFlowExplorer.train_selected), which sends the data again with the new runs.
import { FONT, explorerFrame, kernelButton, modelData, niceTicks, onModelData, paddedRange } from "./explorer.js";
import { formatG, pyFixed } from "./bn.js";

const FLOW_VARIANTS = ["plain", "bn"];

// ----------------------------------------------------------------------------- per-move computations
// What the panels show for settings {depth, activation, init, lr}: the gradient norms per variant,
// their first / last ratios, and each variant's trained run (null where there is none).
export function flowSelection(data, { depth, activation, init, lr }) {
  const grad = {}, ratio = {}, trained = {};
  for (const norm of FLOW_VARIANTS) {
    const row = data.table.find((r) => r.norm === norm && r.depth === depth && r.activation === activation
                                       && r.init === init);
    if (!row) throw new RangeError(`no gradient norms for ${norm}, depth ${depth}, ${activation}, ${init}`);
    // null is a norm JSON could not carry (not finite)
    grad[norm] = row.norms.map((g) => (g === null ? NaN : g));
    ratio[norm] = grad[norm][0] / grad[norm][grad[norm].length - 1];
    trained[norm] = data.runs.find((r) => r.norm === norm && r.depth === depth && r.activation === activation
                                          && r.init === init && r.lr === lr) ?? null;
  }
  return { grad, ratio, trained, complete: FLOW_VARIANTS.every((n) => trained[n] !== null) };
}

export function flowTitle({ depth, activation, init }, ratio) {
  return `At init, depth ${depth}, ${activation}, ${init}: layer 1 / last\n`
    + `without BN ${formatG(ratio.plain, 2)}x, with BN ${formatG(ratio.bn, 2)}x`;
}

// the readout: the ratios, and each variant's outcome (or that nothing was trained)
export function flowReadout(data, selection) {
  const { ratio, trained, complete } = selection;
  const status = complete
    ? FLOW_VARIANTS.map((n) => `${data.labels[n]}: ` + (trained[n].diverged_at !== null
      ? `loss not finite at step ${trained[n].diverged_at}`
      : `test accuracy ${pyFixed(trained[n].test_accuracy[trained[n].test_accuracy.length - 1], 3)}`)).join(" · ")
    : "this configuration has not been trained";
  return `<p>first / last hidden layer gradient norm: without BN ${formatG(ratio.plain, 2)}, `
    + `with BN ${formatG(ratio.bn, 2)}</p><p>${status}</p>`;
}

// [lo, hi] of the positive finite values on a log axis, padded by a fraction of the decades spanned
export function flowLogRange(values, pad = 0.08) {
  const logs = values.filter((v) => Number.isFinite(v) && v > 0).map(Math.log10);
  if (!logs.length) return [0.1, 10];
  const [lo, hi] = paddedRange(logs, pad);
  return hi - lo < 1 ? [10 ** ((lo + hi) / 2 - 0.5), 10 ** ((lo + hi) / 2 + 0.5)] : [10 ** lo, 10 ** hi];
}

// Ticks of a log axis over [lo, hi]: the decades, and 2 and 5 times them where fewer than three decades
// fall inside (as matplotlib labels a short log axis). [{value, label}]
export function flowLogTicks(lo, hi) {
  const inside = (t) => t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9);
  const decades = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) decades.push(e);
  let values = decades.map((e) => 10 ** e).filter(inside);
  if (values.length < 3) {
    values = decades.flatMap((e) => [10 ** e, 2 * 10 ** e, 5 * 10 ** e]).filter(inside);
  } else {
    // at most 8 decades labelled, at round exponents (every 2nd, 5th, 10th...)
    const stride = [1, 2, 5, 10, 20, 50, 100].find((s) => values.length / s <= 8) ?? 100;
    values = values.filter((t) => Math.round(Math.log10(t)) % stride === 0);
  }
  return values.map((t) => {
    const e = Math.round(Math.log10(t));
    const decade = Math.abs(t / 10 ** e - 1) < 1e-9;
    return { value: t, label: decade && Math.abs(e) > 2 ? `1e${e}` : formatG(t, 3) };
  });
}

function drawLogYAxis(ax, ticks) {
  const { ctx, box } = ax;
  ctx.save();
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.lineWidth = 1;
  for (const { value, label } of ticks) {
    const y = ax.py(value);
    ctx.strokeStyle = "#e6e6e6";
    ctx.beginPath(); ctx.moveTo(box.x, y); ctx.lineTo(box.x + box.w, y); ctx.stroke();
    ctx.strokeStyle = "#444";
    ctx.beginPath(); ctx.moveTo(box.x - 4, y); ctx.lineTo(box.x, y); ctx.stroke();
    ctx.fillText(label, box.x - 6, y);
  }
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.restore();
}

// The corner of the axes where a legend covers the fewest of the points (x, y as fractions of the box)
export function flowLegendCorner(points, { width = 0.45, height = 0.25 } = {}) {
  const corners = { "upper right": [1 - width, 1 - height], "upper left": [0, 1 - height],
                    "lower right": [1 - width, 0], "lower left": [0, 0] };
  let best = "upper right", fewest = Infinity;
  for (const [corner, [x0, y0]] of Object.entries(corners)) {
    const n = points.filter(([x, y]) => x >= x0 && x <= x0 + width && y >= y0 && y <= y0 + height).length;
    if (n < fewest) { best = corner; fewest = n; }
  }
  return best;
}

// ----------------------------------------------------------------------------- drawing
function boxFractions(ax, xs, ys) {
  const out = [];
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(ys[i]) || (ax.ylog && ys[i] <= 0)) continue;
    out.push([(ax.px(xs[i]) - ax.box.x) / ax.box.w, 1 - (ax.py(ys[i]) - ax.box.y) / ax.box.h]);
  }
  return out;
}

function drawNorms(ax, data, v, selection) {
  const xlim = paddedRange([1, v.depth], 0.05);
  const ylim = flowLogRange(FLOW_VARIANTS.flatMap((n) => selection.grad[n]));
  // the y ticks drawn here: explorer.js labels a log axis at decades only
  ax.setup({ xlim, ylim, ylog: true, yticks: [], xticks: niceTicks(...xlim).filter(Number.isInteger),
             xlabel: "hidden layer (1 = next to the input)", ylabel: "||dL/dW|| of the layer",
             title: flowTitle(v, selection.ratio) });
  drawLogYAxis(ax, flowLogTicks(...ylim));
  const points = [];
  for (const n of FLOW_VARIANTS) {
    const ys = selection.grad[n], xs = ys.map((_, i) => i + 1);
    ax.line(xs, ys, { color: data.colors[n], width: 1.5 });
    ax.points(xs, ys, { color: data.colors[n], size: 5 });
    points.push(...boxFractions(ax, xs, ys));
  }
  ax.legend(FLOW_VARIANTS.map((n) => ({ label: data.labels[n], color: data.colors[n] })),
            { corner: flowLegendCorner(points, { width: 0.4, height: 0.2 }) });
}

function drawCurves(ax, data, v, selection) {
  const runs = FLOW_VARIANTS.map((n) => selection.trained[n]);
  const last = Math.max(...runs.map((r) => r.eval_steps[r.eval_steps.length - 1] ?? 0), 1);
  ax.setup({ xlim: paddedRange([0, last], 0.05), ylim: [0, 1], xlabel: "training step", ylabel: "test accuracy",
             title: `Training at learning rate ${formatG(v.lr, 6)}` });
  const points = [];
  FLOW_VARIANTS.forEach((n, k) => {
    const r = runs[k], xs = r.eval_steps.slice(0, r.test_accuracy.length);
    const ys = r.test_accuracy.map((a) => (a === null ? NaN : a));
    ax.line(xs, ys, { color: data.colors[n], width: 1.5 });
    points.push(...boxFractions(ax, xs, ys));
    if (r.diverged_at !== null) {
      // an X on the bottom edge where the loss stopped being finite, as plots.plot_curves marks it
      const { ctx } = ax, x = ax.px(r.diverged_at), y = ax.box.y + ax.box.h * 0.96;
      ctx.save();
      ctx.strokeStyle = data.colors[n]; ctx.lineWidth = 3;
      ctx.beginPath(); ctx.moveTo(x - 5, y - 5); ctx.lineTo(x + 5, y + 5); ctx.moveTo(x + 5, y - 5);
      ctx.lineTo(x - 5, y + 5); ctx.stroke();
      ctx.restore();
      points.push([(x - ax.box.x) / ax.box.w, 0.04]);
    }
  });
  const labels = FLOW_VARIANTS.map((n, k) => data.labels[n]
    + (runs[k].diverged_at !== null ? ` (diverged at step ${runs[k].diverged_at})` : ""));
  ax.ctx.save();
  ax.ctx.font = FONT;
  const width = Math.max(...labels.map((l) => ax.ctx.measureText(l).width)) + 40;
  ax.ctx.restore();
  ax.legend(FLOW_VARIANTS.map((n, k) => ({ label: labels[k], color: data.colors[n] })),
            { corner: flowLegendCorner(points, { width: width / ax.box.w, height: 44 / ax.box.h }) });
}

function render({ model, el }) {
  let data = modelData(model);
  const v0 = data.initial, menus = data.menus;
  const specs = [
    { name: "depth", label: "depth", kind: "options", options: menus.depth, value: v0.depth, main: true,
      width: "160px", format: (d) => String(d) },
    { name: "activation", label: "activation", kind: "select", options: menus.activation, value: v0.activation },
    { name: "init", label: "init", kind: "select", options: menus.init, value: v0.init },
    { name: "lr", label: "learning rate", kind: "options", options: menus.lr, value: v0.lr, width: "160px",
      format: (lr) => formatG(lr, 6) },
  ];
  const frame = explorerFrame(el, "GradientFlowExplorer", specs, (v, figure) => {
    const selection = flowSelection(data, v);
    const [left, right] = figure.panels(2, 1, { left: 64, right: 16, top: 46, bottom: 46, gap: 34 });
    drawNorms(left, data, v, selection);
    if (selection.complete) drawCurves(right, data, v, selection);
    else right.message("not trained yet:\npress 'train this configuration'");
    return flowReadout(data, selection);
  }, { width: 900, height: 340 });
  const train = kernelButton(model, "train this configuration", () => frame.values());
  frame.root.insertBefore(train.element, frame.canvas);
  onModelData(model, (fresh) => { data = fresh; frame.redraw(); });
}

export default { render };
