// Lesson 04's explorer: recorded runs side by side, one layer's histogram at a step or its history
// as a heatmap, of the activations or of log10|dL/da|, with a readout of the records at that step.
// Everything is picked from the records sent once (ActivationExplorer); a play button steps through.
import { FONT, explorerFrame, modelData, onModelData, paddedRange, table } from "./explorer.js";
import { formatG, pyExp, pyFixed, recordIndex } from "./bn.js";

// ----------------------------------------------------------------------------- per-move computations
// The fractions of encode_fractions (bnlab.widgets): two characters a bin, code 0 an empty bin, else
// 10^(lo + (code - 1) (hi - lo) / (levels - 1)).
export function decodeFractions(text, { alphabet, log_range: [lo, hi], levels }) {
  const index = new Map(Array.from(alphabet, (c, i) => [c, i]));
  const n = text.length / 2;
  if (!Number.isInteger(n)) throw new RangeError("an encoded histogram has two characters per bin");
  const out = new Float64Array(n);
  const step = (hi - lo) / (levels - 1);
  for (let i = 0; i < n; i++) {
    const a = index.get(text[2 * i]), b = index.get(text[2 * i + 1]);
    if (a === undefined || b === undefined) throw new RangeError(`bad character in an encoded histogram at ${2 * i}`);
    const code = a * 64 + b;
    out[i] = code === 0 ? 0 : 10 ** (lo + (code - 1) * step);
  }
  return out;
}

// One run's layer, decoded: hist and grad (records x bins, flat) and the bins of each.
export function decodeLayer(layer, codec) {
  return { hist: decodeFractions(layer.hist, codec), grad: decodeFractions(layer.grad_hist, codec),
           bins: layer.edges.length - 1, gradBins: layer.grad_edges.length - 1 };
}

// record index's histogram: [edges, fractions]
export function histogramAt(layer, decoded, index, gradients) {
  const bins = gradients ? decoded.gradBins : decoded.bins;
  const flat = gradients ? decoded.grad : decoded.hist;
  return [gradients ? layer.grad_edges : layer.edges, Array.from(flat.subarray(index * bins, (index + 1) * bins))];
}

// matplotlib's viridis, 33 of its colours (linear in between: within 3/255 of the full map)
const ACTIVATION_VIRIDIS = [68, 1, 84, 71, 13, 96, 72, 24, 106, 72, 35, 116, 71, 45, 123, 69, 55, 129, 66, 64, 134, 62,
  73, 137, 59, 82, 139, 55, 91, 141, 51, 99, 141, 47, 107, 142, 44, 114, 142, 41, 122, 142, 38, 130, 142, 35, 137, 142,
  33, 145, 140, 31, 152, 139, 31, 160, 136, 34, 167, 133, 40, 174, 128, 50, 182, 122, 63, 188, 115, 78, 195, 107, 94,
  201, 98, 112, 207, 87, 132, 212, 75, 152, 216, 62, 173, 220, 48, 194, 223, 35, 216, 226, 25, 236, 229, 27, 253, 231, 37];

export function activationViridis(t) {
  const n = ACTIVATION_VIRIDIS.length / 3 - 1;
  const x = Math.min(Math.max(Number.isFinite(t) ? t : 0, 0), 1) * n;
  const i = Math.min(Math.floor(x), n - 1), f = x - i;
  return [0, 1, 2].map((k) => Math.round(ACTIVATION_VIRIDIS[3 * i + k] * (1 - f) + ACTIVATION_VIRIDIS[3 * i + 3 + k] * f));
}

// The heatmap as RGBA pixels, records wide and bins high, the last bin in the top row: colour =
// log10 of the fraction in the bin on [lo, hi] (plots.HEATMAP_RANGE), as plots.plot_histogram_heatmap.
export function activationHeatmapPixels(flat, records, bins, [lo, hi]) {
  const out = new Uint8ClampedArray(records * bins * 4);
  const floor = 10 ** lo;
  for (let r = 0; r < records; r++) {
    for (let b = 0; b < bins; b++) {
      const t = (Math.log10(Math.max(flat[r * bins + b], floor)) - lo) / (hi - lo);
      const [red, green, blue] = activationViridis(t);
      const p = ((bins - 1 - b) * records + r) * 4;
      out[p] = red; out[p + 1] = green; out[p + 2] = blue; out[p + 3] = 255;
    }
  }
  return out;
}

// The next value of the step slider while playing: `stride` records on, the last one at the end;
// null once the last record is shown (the player stops, as ipywidgets' Play did).
export function activationPlayNext(steps, step, stride) {
  const i = recordIndex(steps, step);
  if (i >= steps.length - 1) return null;
  return steps[Math.min(i + stride, steps.length - 1)];
}

// The readout at record index: per run mean, std, percentiles and ||dL/da||, as the old explorer showed
export function activationReadout(data, layer, index) {
  const rows = {};
  for (const run of data.runs) {
    const r = run.layers[layer];
    rows[run.label] = [pyFixed(r.mean[index], 3), pyFixed(r.std[index], 3),
                       r.percentiles[index].map((v) => pyFixed(v, 2)).join(" / "), pyExp(r.grad_norm[index], 2)];
  }
  const header = ["", "mean", "std", `percentiles ${data.percentiles.map((q) => formatG(q, 6)).join("/")}`, "||dL/da||"];
  return { rows, header };
}

// ----------------------------------------------------------------------------- drawing
function drawLayerHistogram(ax, edges, fractions, color, { percentiles, xlabel, title }) {
  const peak = Math.max(...fractions);
  ax.setup({ xlim: paddedRange([edges[0], edges[edges.length - 1]], 0.05), ylim: [0, peak > 0 ? peak * 1.05 : 1],
             xlabel, ylabel: "fraction of values", title });
  ax.stairs(edges, fractions, { color, alpha: 0.8 });
  for (const [q, value] of percentiles) {
    ax.vline(value, { color: "#000", width: 0.8, dash: q === 50 ? [] : [4, 3] });
  }
}

function drawColorbar(ax, [lo, hi], label) {
  const { ctx, box } = ax;
  const x = box.x + box.w + 10, w = 12;
  ctx.save();
  for (let k = 0; k < box.h; k++) {
    const [r, g, b] = activationViridis(1 - k / box.h);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(x, box.y + k, w, 1.5);
  }
  ctx.strokeStyle = "#444"; ctx.lineWidth = 1; ctx.strokeRect(x, box.y, w, box.h);
  ctx.font = FONT; ctx.fillStyle = "#222"; ctx.textAlign = "left"; ctx.textBaseline = "middle";
  for (let t = Math.ceil(lo); t <= hi; t++) {
    const y = box.y + box.h * (hi - t) / (hi - lo);
    ctx.beginPath(); ctx.moveTo(x + w, y); ctx.lineTo(x + w + 3, y); ctx.stroke();
    ctx.fillText(t < 0 ? `−${-t}` : String(t), x + w + 5, y);
  }
  ctx.translate(x + w + 32, box.y + box.h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.font = "11px DejaVu Sans, Arial, sans-serif"; ctx.textAlign = "center";
  ctx.fillText(label, 0, 0, box.h);
  ctx.restore();
}

function render({ model, el }) {
  let data = modelData(model);
  const decoded = new Map();   // run key|layer -> decodeLayer, made on first view
  const images = new Map();    // run key|layer|quantity -> the heatmap, as an offscreen canvas
  const layerOf = (run, layer) => {
    const key = `${run.key}|${layer}`;
    if (!decoded.has(key)) decoded.set(key, decodeLayer(run.layers[layer], data.fractions));
    return decoded.get(key);
  };
  const heatmapOf = (run, layer, gradients) => {
    const key = `${run.key}|${layer}|${gradients}`;
    if (!images.has(key)) {
      const d = layerOf(run, layer);
      const bins = gradients ? d.gradBins : d.bins, records = data.steps.length;
      const canvas = document.createElement("canvas");
      canvas.width = records; canvas.height = bins;
      const pixels = activationHeatmapPixels(gradients ? d.grad : d.hist, records, bins, data.heatmap.log_range);
      canvas.getContext("2d").putImageData(new ImageData(pixels, records, bins), 0, 0);
      images.set(key, canvas);
    }
    return images.get(key);
  };
  const steps = data.steps, v0 = data.initial;
  const specs = [
    { name: "step", label: "step", kind: "range", min: steps[0], max: steps[steps.length - 1], step: data.every,
      value: v0.step, main: true, width: "360px", format: (s) => String(s) },
    { name: "layer", label: "layer", kind: "select", options: data.layers, value: v0.layer },
    { name: "quantity", label: "show", kind: "select", options: data.quantities, value: v0.quantity },
  ];
  const frame = explorerFrame(el, "ActivationExplorer", specs, (v, figure) => {
    const i = recordIndex(data.steps, v.step);
    const gradients = v.quantity.startsWith("gradients");
    const heat = v.quantity.endsWith("over training");
    const axes = figure.panels(data.runs.length, 1, { left: 60, right: heat ? 84 : 14, top: 28, bottom: 46, gap: 30 });
    data.runs.forEach((run, k) => {
      const ax = axes[k], layer = run.layers[v.layer];
      const color = data.colors[run.key] ?? "#000";
      if (heat) {
        const edges = gradients ? layer.grad_edges : layer.edges;
        const last = data.steps[data.steps.length - 1];
        const xlim = [data.steps[0], last > data.steps[0] ? last : data.steps[0] + data.every];
        ax.xlim = xlim; ax.ylim = [edges[0], edges[edges.length - 1]];
        const { ctx, box } = ax;
        ctx.save();
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(heatmapOf(run, v.layer, gradients), box.x, box.y, box.w, box.h);
        ctx.restore();
        ax.setup({ xlim, ylim: ax.ylim, grid: false, xlabel: "training step",
                   ylabel: gradients ? "log10 |dL/da|" : "value a", title: `${run.label}: ${v.layer} over training` });
        ax.vline(data.steps[i], { color: "#fff", width: 1, dash: [4, 3] });
        drawColorbar(ax, data.heatmap.log_range, data.heatmap.label);
      } else {
        const [edges, fractions] = histogramAt(layer, layerOf(run, v.layer), i, gradients);
        drawLayerHistogram(ax, edges, fractions, color, {
          percentiles: gradients ? [] : data.percentiles.map((q, j) => [q, layer.percentiles[i][j]]),
          xlabel: gradients ? "log10 |dL/da|" : `${v.layer} value (percentiles dashed)`,
          title: `${run.label}: ${v.layer} at step ${data.steps[i]}` });
      }
    });
    const { rows, header } = activationReadout(data, v.layer, i);
    return table(rows, header);
  }, { width: 900, height: 330 });

  // ▶ steps through the records, as the old explorer's Play widget (records_per_tick every interval_ms)
  const play = document.createElement("button");
  play.className = "bnlab-play";
  play.style.minWidth = "6.5em";
  let timer = null;
  const stop = () => { clearInterval(timer); timer = null; play.textContent = "▶ play"; };
  stop();
  play.addEventListener("click", () => {
    if (timer !== null) { stop(); return; }
    const last = data.steps[data.steps.length - 1];
    if (frame.controls.step.value() >= last) frame.set("step", data.steps[0]);
    play.textContent = "❚❚ pause";
    timer = setInterval(() => {
      const next = activationPlayNext(data.steps, frame.controls.step.value(), data.play.records_per_tick);
      if (next === null) stop(); else frame.set("step", next);
    }, data.play.interval_ms);
  });
  frame.root.firstChild.prepend(play);
  onModelData(model, (fresh) => { data = fresh; decoded.clear(); images.clear(); frame.redraw(); });
  return () => clearInterval(timer);
}

export default { render };
