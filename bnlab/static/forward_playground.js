// Lesson 01's playground: x = mean + scale * z over a batch of a fixed sample z, through BN, in
// the browser on every move.
import { explorerFrame, modelData, paddedRange, table } from "./explorer.js";
import { batchnormForward, extent, formatG, histogram, histogramEdges, mean, std } from "./bn.js";

// x, y and BN's statistics for the settings: the same numbers as ForwardPlayground.compute
export function playground(samples, { mean: m, scale, batch_size: n, gamma, beta, eps, shape }) {
  const z = samples[shape].slice(0, n);
  const x = z.map((zi) => m + scale * zi);
  const bn = batchnormForward(x, gamma, beta, eps);
  return { x, y: bn.y, mu: bn.mu, var: bn.var, gain: bn.invStd };
}

function drawHistogram(ax, values, color, name, title) {
  const edges = histogramEdges(values, 30);
  const counts = histogram(values, edges);
  const [lo, hi] = extent(edges);
  ax.setup({ xlim: paddedRange([lo, hi], 0.04), ylim: [0, Math.max(...counts) * 1.1 + 0.5],
             xlabel: `${name} (units of the feature)`, ylabel: "count in the batch", title });
  ax.stairs(edges, counts, { color, alpha: 0.85 });
  const mu = mean(values);
  ax.vline(mu, { color: "#000" });
  ax.legend([{ label: `mean ${mu.toFixed(2)}`, color: "#000", dash: [4, 3] }]);
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const w = "220px";
  const specs = [
    { name: "mean", label: "input mean", kind: "range", min: -50, max: 50, step: 0.5, value: v0.mean, main: true, width: w },
    { name: "scale", label: "input std", kind: "log", min: 1e-3, max: 1e2, value: v0.scale, width: w },
    { name: "batch_size", label: "batch size", kind: "range", min: 2, max: 512, step: 1, value: v0.batch_size, width: w },
    { name: "gamma", label: "γ", kind: "range", min: -3, max: 3, step: 0.1, value: v0.gamma, width: w },
    { name: "beta", label: "β", kind: "range", min: -3, max: 3, step: 0.1, value: v0.beta, width: w },
    { name: "eps", label: "ε", kind: "log", min: 1e-8, max: 10, value: v0.eps, width: w,
      format: (e) => e.toExponential(0) },
    { name: "shape", label: "shape", kind: "select", options: Object.keys(data.samples), value: v0.shape },
  ];
  explorerFrame(el, "ForwardPlayground", specs, (v, figure) => {
    const r = playground(data.samples, v);
    figure.suptitle(`BN output: mean β = ${v.beta.toFixed(2)}, std ≈ |γ| = ${Math.abs(v.gamma).toFixed(2)}`);
    const [left, right] = figure.panels(2, 1, { top: 48 });
    drawHistogram(left, r.x, data.colors.plain, "input x", `input x: std ${std(r.x).toFixed(2)}`);
    drawHistogram(right, r.y, data.colors.bn, "output y", `output y: std ${std(r.y).toFixed(2)}`);
    const row = (a) => [mean(a), std(a), ...extent(a)].map((s) => s.toFixed(3));
    const flag = v.eps > r.var / 10 ? " &nbsp;<b>ε dominates σ²: the output std is below |γ|</b>" : "";
    return table({ "input x": row(r.x), "output y": row(r.y) }, ["", "mean", "std", "min", "max"])
      + `<p>batch statistics: μ = ${r.mu.toFixed(3)}, σ² = ${formatG(r.var, 4)}; gain 1/√(σ²+ε) = `
      + `${formatG(r.gain, 4)}${flag}</p>`;
  }, { width: 900, height: 330 });
}

export default { render };
