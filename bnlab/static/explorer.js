// The explorers' shared front end: controls, a small canvas plotting layer in the course's style,
// and the frame every explorer view lives in. Plain ES module, no dependencies: bnlab.widgets bundles
// it with bn.js and one view file into the single module anywidget loads (imports and exports are
// stripped there, so names must be unique across the three files), and node --test imports it as is.
//
// DOM contract (the e2e tests and the site rely on it): a root div.bnlab-explorer with
// data-explorer="<class name>", its main control an <input type="range" data-main>, its figure a
// <canvas>; every redraw increments root.dataset.draws and sets root.dataset.lastDrawMs.

import { formatG } from "./bn.js";

export const FONT = "12px DejaVu Sans, Arial, sans-serif";
export const TITLE_FONT = "bold 12px DejaVu Sans, Arial, sans-serif";

// ----------------------------------------------------------------------------- the model
// The explorer's data: sent once as one JSON text (bnlab.widgets.Explorer._payload), parsed here.
export function modelData(model) {
  return JSON.parse(model.get("_payload"));
}

// Calls back with the new data when Python sends another (a training run added).
export function onModelData(model, callback) {
  model.on("change:_payload", () => callback(modelData(model)));
}

// ----------------------------------------------------------------------------- the frame
// Builds the root, a row of controls, the canvas and a readout; calls draw(values) now and on every
// control move. Returns {root, controls, canvas, readout, redraw, set}.
export function explorerFrame(el, name, specs, draw, { width = 900, height = 320 } = {}) {
  const root = document.createElement("div");
  root.className = "bnlab-explorer";
  root.dataset.explorer = name;
  root.dataset.draws = "0";
  root.style.fontFamily = "DejaVu Sans, Arial, sans-serif";
  root.style.fontSize = "13px";
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex; flex-wrap:wrap; gap:4px 18px; align-items:center; margin-bottom:6px";
  const controls = {};
  for (const spec of specs) {
    const control = makeControl(spec, () => redraw());
    controls[spec.name] = control;
    bar.appendChild(control.element);
  }
  const canvas = document.createElement("canvas");
  const readout = document.createElement("div");
  readout.className = "bnlab-readout";
  readout.style.cssText = "margin-top:4px; line-height:1.4";
  root.append(bar, canvas, readout);
  el.appendChild(root);
  const figure = new Figure(canvas, width, height);

  function values() {
    const out = {};
    for (const [key, control] of Object.entries(controls)) out[key] = control.value();
    return out;
  }
  function redraw() {
    const start = performance.now();
    figure.clear();
    readout.innerHTML = draw(values(), figure) || "";
    root.dataset.draws = String(Number(root.dataset.draws) + 1);
    root.dataset.lastDrawMs = (performance.now() - start).toFixed(3);
  }
  function set(key, value) {
    controls[key].set(value);
    redraw();
  }
  redraw();
  return { root, controls, canvas, readout, figure, redraw, set, values };
}

// A control from a spec: {name, label, kind: "range"|"log"|"options"|"select", value, min, max, step,
// options, main}. "range" is linear; "log" moves the exponent (value = 10^position); "options" is a
// slider over a list of values (ipywidgets' SelectionSlider); "select" a drop-down.
export function makeControl(spec, onChange) {
  const element = document.createElement("label");
  element.style.cssText = "display:inline-flex; align-items:center; gap:6px; white-space:nowrap";
  const caption = document.createElement("span");
  caption.textContent = spec.label ?? spec.name;
  caption.style.minWidth = spec.labelWidth ?? "auto";
  element.appendChild(caption);
  let input, shown, value, set;
  const format = spec.format ?? ((v) => (typeof v === "number" ? formatG(v, 3) : String(v)));
  if (spec.kind === "select") {
    input = document.createElement("select");
    for (const option of spec.options) {
      const o = document.createElement("option");
      o.value = String(option);
      o.textContent = String(option);
      input.appendChild(o);
    }
    input.value = String(spec.value);
    value = () => spec.options[input.selectedIndex];
    set = (v) => { input.selectedIndex = spec.options.indexOf(v); };
    input.addEventListener("change", onChange);
    element.appendChild(input);
  } else {
    input = document.createElement("input");
    input.type = "range";
    if (spec.main) input.dataset.main = "";
    input.style.width = spec.width ?? "200px";
    shown = document.createElement("span");
    shown.style.cssText = "min-width:4em; font-variant-numeric:tabular-nums";
    if (spec.kind === "options") {
      input.min = 0; input.max = spec.options.length - 1; input.step = 1;
      input.value = Math.max(0, spec.options.indexOf(spec.value));
      value = () => spec.options[Number(input.value)];
      set = (v) => { input.value = spec.options.indexOf(v); };
    } else if (spec.kind === "log") {
      // "any" keeps the initial value exact (the snapshot's) instead of snapping it to a grid
      input.min = Math.log10(spec.min); input.max = Math.log10(spec.max); input.step = spec.step ?? "any";
      input.value = Math.log10(spec.value);
      value = () => 10 ** Number(input.value);
      set = (v) => { input.value = Math.log10(v); };
    } else {
      input.min = spec.min; input.max = spec.max; input.step = spec.step ?? 1;
      input.value = spec.value;
      value = () => Number(input.value);
      set = (v) => { input.value = v; };
    }
    const update = () => { shown.textContent = format(value()); };
    input.addEventListener("input", () => { update(); onChange(); });
    update();
    const original = set;
    set = (v) => { original(v); update(); };
    element.append(input, shown);
  }
  input.dataset.control = spec.name;
  return { element, input, value, set };
}

// A button that asks the kernel for something (a new training run). With no kernel (a saved notebook,
// the static site) nothing answers: after waitMs it says so instead of waiting for ever.
export function kernelButton(model, label, message, { waitMs = 3000 } = {}) {
  const box = document.createElement("div");
  box.style.cssText = "display:flex; gap:10px; align-items:center; margin:4px 0";
  const button = document.createElement("button");
  button.textContent = label;
  button.className = "bnlab-train";
  const status = document.createElement("span");
  status.className = "bnlab-status";
  box.append(button, status);
  let timer = null;
  button.addEventListener("click", () => {
    status.textContent = "asking the kernel to train…";
    const noKernel = () => {
      status.textContent = "Training needs a running kernel: open the notebook in Jupyter, run its cells, then press again.";
      status.dataset.noKernel = "";
    };
    try {
      model.send({ event: "train", ...message() });
      timer = setTimeout(noKernel, waitMs);
    } catch (error) {
      noKernel();
    }
  });
  model.on("msg:custom", (msg) => {
    if (msg && msg.event === "training") {
      clearTimeout(timer);
      delete status.dataset.noKernel;
      status.textContent = msg.done ? "" : "training in the kernel (progress below the notebook cell)…";
    }
  });
  return { element: box, button, status };
}

// ----------------------------------------------------------------------------- plotting
// A figure of panels side by side on one canvas, drawn at the device's pixel ratio.
export class Figure {
  constructor(canvas, width, height) {
    this.canvas = canvas;
    this.width = width;
    this.height = height;
    const ratio = (typeof window !== "undefined" && window.devicePixelRatio) || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    this.ctx = canvas.getContext("2d");
    this.ratio = ratio;
  }
  clear() {
    const ctx = this.ctx;
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, this.width, this.height);
  }
  // a title over the whole figure, for the finding
  suptitle(text) {
    const ctx = this.ctx;
    ctx.save();
    ctx.font = "bold 13px DejaVu Sans, Arial, sans-serif"; ctx.fillStyle = "#111";
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    ctx.fillText(text, this.width / 2, 4, this.width - 8);
    ctx.restore();
  }
  // n panels in a row (or a rows x cols grid); each an Axes with room for labels
  panels(cols, rows = 1, { left = 58, right = 14, top = 40, bottom = 44, gap = 26 } = {}) {
    const w = (this.width - gap * (cols - 1)) / cols;
    const h = (this.height - gap * (rows - 1)) / rows;
    const out = [];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const x0 = c * (w + gap), y0 = r * (h + gap);
        out.push(new Axes(this.ctx, { x: x0 + left, y: y0 + top, w: w - left - right, h: h - top - bottom },
                          { x: x0, y: y0, w, h }));
      }
    }
    return out;
  }
}

export class Axes {
  constructor(ctx, box, cell) {
    this.ctx = ctx;
    this.box = box;     // the plotting area, CSS pixels
    this.cell = cell;   // the whole panel, labels included
    this.xlim = [0, 1]; this.ylim = [0, 1];
    this.xlog = false; this.ylog = false;
  }
  // limits, scales and labels; draws the frame, ticks, labels and title
  setup({ xlim, ylim, xlog = false, ylog = false, xlabel = "", ylabel = "", title = "", grid = true,
          xticks = null, yticks = null } = {}) {
    this.xlog = xlog; this.ylog = ylog;
    this.xlim = xlim ?? this.xlim; this.ylim = ylim ?? this.ylim;
    const { ctx, box } = this;
    ctx.save();
    ctx.strokeStyle = "#444"; ctx.lineWidth = 1;
    ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.font = FONT; ctx.fillStyle = "#222";
    const xt = xticks ?? (xlog ? logTicks(...this.xlim) : niceTicks(...this.xlim));
    const yt = yticks ?? (ylog ? logTicks(...this.ylim) : niceTicks(...this.ylim));
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const t of xt) {
      const px = this.px(t);
      if (px < box.x - 0.5 || px > box.x + box.w + 0.5) continue;
      if (grid) { ctx.strokeStyle = "#e6e6e6"; line(ctx, px, box.y, px, box.y + box.h); }
      ctx.strokeStyle = "#444"; line(ctx, px, box.y + box.h, px, box.y + box.h + 4);
      ctx.fillText(tickLabel(t, xlog), px, box.y + box.h + 6);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const t of yt) {
      const py = this.py(t);
      if (py < box.y - 0.5 || py > box.y + box.h + 0.5) continue;
      if (grid) { ctx.strokeStyle = "#e6e6e6"; line(ctx, box.x, py, box.x + box.w, py); }
      ctx.strokeStyle = "#444"; line(ctx, box.x - 4, py, box.x, py);
      ctx.fillText(tickLabel(t, ylog), box.x - 6, py);
    }
    ctx.strokeStyle = "#444"; ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText(xlabel, box.x + box.w / 2, box.y + box.h + 38);
    ctx.save();
    ctx.translate(this.cell.x + 12, box.y + box.h / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(ylabel, 0, 0);
    ctx.restore();
    ctx.font = TITLE_FONT;
    const lines = String(title).split("\n");
    lines.forEach((text, i) => {
      ctx.fillText(text, this.cell.x + this.cell.w / 2, box.y - 6 - (lines.length - 1 - i) * 15, this.cell.w);
    });
    ctx.restore();
    return this;
  }
  px(x) {
    const [a, b] = this.xlim;
    const f = this.xlog ? (Math.log10(x) - Math.log10(a)) / (Math.log10(b) - Math.log10(a)) : (x - a) / (b - a);
    return this.box.x + f * this.box.w;
  }
  py(y) {
    const [a, b] = this.ylim;
    const f = this.ylog ? (Math.log10(y) - Math.log10(a)) / (Math.log10(b) - Math.log10(a)) : (y - a) / (b - a);
    return this.box.y + this.box.h - f * this.box.h;
  }
  clip(fn) {
    const { ctx, box } = this;
    ctx.save();
    ctx.beginPath(); ctx.rect(box.x, box.y, box.w, box.h); ctx.clip();
    fn(ctx);
    ctx.restore();
  }
  line(xs, ys, { color = "#333", width = 1.6, dash = [] } = {}) {
    this.clip((ctx) => {
      ctx.strokeStyle = color; ctx.lineWidth = width; ctx.setLineDash(dash);
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < xs.length; i++) {
        const y = ys[i];
        if (!Number.isFinite(y) || (this.ylog && y <= 0)) { pen = false; continue; }
        const px = this.px(xs[i]), py = this.py(y);
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
      }
      ctx.stroke();
    });
  }
  points(xs, ys, { color = "#333", size = 2, alpha = 1 } = {}) {
    this.clip((ctx) => {
      ctx.fillStyle = color; ctx.globalAlpha = alpha;
      for (let i = 0; i < xs.length; i++) {
        if (!Number.isFinite(ys[i])) continue;
        ctx.fillRect(this.px(xs[i]) - size / 2, this.py(ys[i]) - size / 2, size, size);
      }
    });
  }
  // a histogram: counts[i] between edges[i] and edges[i + 1]
  stairs(edges, counts, { color = "#333", alpha = 0.8 } = {}) {
    this.clip((ctx) => {
      ctx.fillStyle = color; ctx.globalAlpha = alpha;
      for (let i = 0; i < counts.length; i++) {
        const x0 = this.px(edges[i]), x1 = this.px(edges[i + 1]);
        const y0 = this.py(0), y1 = this.py(counts[i]);
        ctx.fillRect(x0, y1, Math.max(x1 - x0, 0.5), y0 - y1);
      }
    });
  }
  bars(xs, heights, { color = "#333", width = 0.8, offset = 0, alpha = 0.9 } = {}) {
    this.clip((ctx) => {
      ctx.fillStyle = color; ctx.globalAlpha = alpha;
      for (let i = 0; i < xs.length; i++) {
        const x0 = this.px(xs[i] + offset - width / 2), x1 = this.px(xs[i] + offset + width / 2);
        const y0 = this.py(0), y1 = this.py(heights[i]);
        ctx.fillRect(x0, Math.min(y0, y1), x1 - x0, Math.abs(y0 - y1));
      }
    });
  }
  band(xs, lo, hi, { color = "#333", alpha = 0.2 } = {}) {
    this.clip((ctx) => {
      ctx.fillStyle = color; ctx.globalAlpha = alpha;
      ctx.beginPath();
      for (let i = 0; i < xs.length; i++) ctx[i ? "lineTo" : "moveTo"](this.px(xs[i]), this.py(hi[i]));
      for (let i = xs.length - 1; i >= 0; i--) ctx.lineTo(this.px(xs[i]), this.py(lo[i]));
      ctx.closePath(); ctx.fill();
    });
  }
  vline(x, { color = "#000", width = 1, dash = [4, 3] } = {}) {
    this.clip((ctx) => {
      ctx.strokeStyle = color; ctx.lineWidth = width; ctx.setLineDash(dash);
      line(ctx, this.px(x), this.box.y, this.px(x), this.box.y + this.box.h);
    });
  }
  hline(y, { color = "#000", width = 1, dash = [4, 3] } = {}) {
    this.clip((ctx) => {
      ctx.strokeStyle = color; ctx.lineWidth = width; ctx.setLineDash(dash);
      line(ctx, this.box.x, this.py(y), this.box.x + this.box.w, this.py(y));
    });
  }
  // rows x cols values as coloured cells over extent [x0, x1] x [y0, y1]; colour(v) -> css colour
  image(rows, extent, colour) {
    const [x0, x1, y0, y1] = extent;
    const n = rows.length, m = rows[0].length;
    this.clip((ctx) => {
      for (let i = 0; i < n; i++) {
        const ya = this.py(y0 + (y1 - y0) * (i / n)), yb = this.py(y0 + (y1 - y0) * ((i + 1) / n));
        for (let j = 0; j < m; j++) {
          const xa = this.px(x0 + (x1 - x0) * (j / m)), xb = this.px(x0 + (x1 - x0) * ((j + 1) / m));
          ctx.fillStyle = colour(rows[i][j]);
          ctx.fillRect(Math.min(xa, xb), Math.min(ya, yb), Math.abs(xb - xa) + 0.6, Math.abs(yb - ya) + 0.6);
        }
      }
    });
  }
  // items: [{label, color, kind: "line"|"box"|"dots", dash}]
  legend(items, { corner = "upper right" } = {}) {
    const { ctx, box } = this;
    ctx.save();
    ctx.font = FONT;
    const w = Math.max(...items.map((it) => ctx.measureText(it.label).width)) + 34;
    const h = items.length * 16 + 6;
    const x = corner.includes("left") ? box.x + 6 : box.x + box.w - w - 6;
    const y = corner.includes("lower") ? box.y + box.h - h - 6 : box.y + 6;
    ctx.globalAlpha = 0.85; ctx.fillStyle = "#fff"; ctx.fillRect(x, y, w, h);
    ctx.globalAlpha = 1; ctx.strokeStyle = "#ccc"; ctx.strokeRect(x, y, w, h);
    items.forEach((it, i) => {
      const cy = y + 11 + i * 16;
      ctx.strokeStyle = it.color; ctx.fillStyle = it.color; ctx.lineWidth = 2;
      ctx.setLineDash(it.dash ?? []);
      if (it.kind === "box") ctx.fillRect(x + 6, cy - 5, 18, 10);
      else if (it.kind === "dots") ctx.fillRect(x + 13, cy - 2, 4, 4);
      else line(ctx, x + 6, cy, x + 24, cy);
      ctx.setLineDash([]);
      ctx.fillStyle = "#222"; ctx.textBaseline = "middle"; ctx.textAlign = "left";
      ctx.fillText(it.label, x + 28, cy);
    });
    ctx.restore();
  }
  message(text) {
    const { ctx, box } = this;
    ctx.save();
    ctx.strokeStyle = "#444"; ctx.strokeRect(box.x, box.y, box.w, box.h);
    ctx.font = FONT; ctx.fillStyle = "#555"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    String(text).split("\n").forEach((t, i, all) => ctx.fillText(t, box.x + box.w / 2,
                                                                  box.y + box.h / 2 + (i - (all.length - 1) / 2) * 16));
    ctx.restore();
  }
}

function line(ctx, x0, y0, x1, y1) {
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
}

// About n round-numbered ticks covering [a, b] (1, 2, 2.5 or 5 times a power of ten).
export function niceTicks(a, b, n = 5) {
  if (!(b > a)) return [a];
  const raw = (b - a) / n;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= raw);
  const out = [];
  for (let t = Math.ceil(a / step) * step; t <= b + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

// Decades covering [a, b] (a > 0); every other one when there are many.
export function logTicks(a, b) {
  const lo = Math.floor(Math.log10(a)), hi = Math.ceil(Math.log10(b));
  const stride = Math.max(1, Math.ceil((hi - lo) / 7));
  const out = [];
  for (let e = lo; e <= hi; e += stride) out.push(10 ** e);
  return out;
}

export function tickLabel(t, log) {
  if (log) {
    const e = Math.round(Math.log10(t));
    return Math.abs(e) <= 2 ? formatG(10 ** e, 3) : `1e${e}`;
  }
  return formatG(t, 4);
}

// [lo, hi] padded by a fraction of the span (or around a single value)
export function paddedRange(values, pad = 0.05) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo === Infinity) return [0, 1];
  if (hi === lo) return [lo - 0.5, hi + 0.5];
  const span = hi - lo;
  return [lo - pad * span, hi + pad * span];
}

// An HTML table: rows {name: [cells]}, header [names]
export function table(rows, header) {
  const esc = (s) => String(s).replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c]));
  const head = header.map((h) => `<th style='padding:0 10px'>${esc(h)}</th>`).join("");
  const body = Object.entries(rows).map(([name, cells]) => `<tr><td style='padding:0 10px'>${esc(name)}</td>`
    + cells.map((c) => `<td style='padding:0 10px; text-align:right'>${c}</td>`).join("") + "</tr>").join("");
  return `<table><tr>${head}</tr>${body}</table>`;
}
