// Lesson 07: predicted masks recorded during training, next to the truth. Rows of test images;
// columns image, true mask and each variant's prediction at the chosen step. The masks come as one
// string of class ids per mask (a digit a pixel) and are painted here pixel by pixel (ImageData),
// in bnlab.plots.plot_masks' class colours.
import { explorerFrame, modelData, table } from "./explorer.js";
import { recordIndex } from "./bn.js";

// "0112..." -> class ids, row by row
export function decodeMask(text) {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) - 48;
  return out;
}

export function hexRgb(hex) {
  const h = hex.replace("#", "");
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

// RGBA bytes of a mask in the class colours ("#rrggbb" per class id)
export function maskPixels(ids, classColors) {
  const rgb = classColors.map(hexRgb);
  const out = new Uint8ClampedArray(ids.length * 4);
  for (let i = 0; i < ids.length; i++) {
    const c = rgb[ids[i]];
    out[4 * i] = c[0]; out[4 * i + 1] = c[1]; out[4 * i + 2] = c[2]; out[4 * i + 3] = 255;
  }
  return out;
}

// RGBA bytes of a grey image sent as 0-255 levels (matplotlib's grey colour map: v -> (v, v, v))
export function greyPixels(levels) {
  const out = new Uint8ClampedArray(levels.length * 4);
  for (let i = 0; i < levels.length; i++) {
    out[4 * i] = out[4 * i + 1] = out[4 * i + 2] = levels[i]; out[4 * i + 3] = 255;
  }
  return out;
}

// What one move shows: the recorded step's index, the rows' image indices, and each variant's
// test mean IoU at that step (null where none was given)
export function maskView(data, step, first) {
  const s = recordIndex(data.steps, step);
  const last = data.images.length - data.rows;
  const f = Math.min(Math.max(first, 0), last);
  const images = Array.from({ length: data.rows }, (_, r) => f + r);
  const scores = {};
  for (const name of data.variants) scores[name] = data.scores[name] ? data.scores[name][s] : null;
  return { stepIndex: s, step: data.steps[s], images, scores };
}

export function maskTitle(data, view) {
  return `Test images ${view.images[0]}–${view.images.at(-1)}: true masks and predictions at step ${view.step}`;
}

export function maskReadout(data, view) {
  const rows = {};
  for (const name of data.variants) {
    const v = view.scores[name];
    rows[data.names[name]] = [v === null || v === undefined ? "–" : v.toFixed(3)];
  }
  // plot_masks has no legend; the colours' key goes under the table
  const key = data.class_names.map((name, i) => `<span style='display:inline-block; width:11px; height:11px; `
    + `background:${data.class_colors[i]}; border:1px solid #888; vertical-align:middle'></span> ${name}`).join(" &nbsp; ");
  return table(rows, [`step ${view.step}`, "test mean IoU"]) + `<p>classes: ${key}</p>`;
}

const CELL = 132, GAP = 10, PAD = 12, HEAD = 46;

function render({ model, el }) {
  const data = modelData(model);
  const w = data.width, h = data.height;
  const columns = 2 + data.variants.length;
  // one small canvas per image or mask, made when first shown; drawImage scales it without smoothing
  const tiles = new Map();
  const tile = (key, pixels) => {
    if (!tiles.has(key)) {
      const c = document.createElement("canvas");
      c.width = w; c.height = h;
      const image = new ImageData(pixels(), w, h);
      c.getContext("2d").putImageData(image, 0, 0);
      tiles.set(key, c);
    }
    return tiles.get(key);
  };
  const specs = [
    { name: "step", label: "training step", kind: "options", options: data.steps, value: data.initial.step,
      main: true, width: "300px" },
    { name: "first", label: "first image", kind: "range", min: 0, max: data.images.length - data.rows, step: 1,
      value: data.initial.first, width: "200px" },
  ];
  const width = 2 * PAD + columns * CELL + (columns - 1) * GAP;
  const height = HEAD + data.rows * CELL + (data.rows - 1) * GAP + PAD;
  explorerFrame(el, "MaskExplorer", specs, (v, figure) => {
    const view = maskView(data, v.step, v.first);
    const ctx = figure.ctx;
    figure.suptitle(maskTitle(data, view));
    const titles = ["image", "true mask", ...data.variants.map((n) => data.names[n])];
    const colours = ["#222", "#222", ...data.variants.map((n) => data.colors[n] ?? "#222")];
    ctx.save();
    ctx.imageSmoothingEnabled = false;
    ctx.font = "12px DejaVu Sans, Arial, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    for (let c = 0; c < columns; c++) {
      const x = PAD + c * (CELL + GAP);
      ctx.fillStyle = colours[c];
      ctx.fillText(titles[c], x + CELL / 2, HEAD - 5, CELL + GAP);
      view.images.forEach((n, r) => {
        const y = HEAD + r * (CELL + GAP);
        let t;
        if (c === 0) t = tile(`image ${n}`, () => greyPixels(data.images[n]));
        else if (c === 1) t = tile(`mask ${n}`, () => maskPixels(decodeMask(data.masks[n]), data.class_colors));
        else {
          const name = data.variants[c - 2];
          t = tile(`${name} ${view.stepIndex} ${n}`,
                   () => maskPixels(decodeMask(data.predictions[name][view.stepIndex][n]), data.class_colors));
        }
        ctx.drawImage(t, x, y, CELL, CELL);
        ctx.strokeStyle = "#444"; ctx.lineWidth = 1;
        ctx.strokeRect(x + 0.5, y + 0.5, CELL - 1, CELL - 1);
      });
    }
    ctx.restore();
    return maskReadout(data, view);
  }, { width, height });
}

export default { render };
