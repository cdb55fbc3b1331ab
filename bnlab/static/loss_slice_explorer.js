// Lesson 09's loss-slice explorer: the training loss along the step SGD is about to take,
// L(theta - k lr g) against k, at recorded checkpoints, one curve per variant (Santurkar et al.
// 2018, Figure 4). Per move, in the browser: picking the checkpoint's slices, each variant's loss
// range over k, the loss at the chosen k, and the title's ratio; LossSliceExplorer computes the same.
import { explorerFrame, modelData, paddedRange, table } from "./explorer.js";
import { formatG, pyFixed } from "./bn.js";

// The slices of one checkpoint: per variant the losses over data.ks, L(theta), their range
// (max - min over ks, as bnlab.landscape.GradientPath.loss_range) and the loss at the recorded k
// nearest to k (the first of two equally near, as numpy's argmin).
export function sliceAt(data, { step, k }) {
  const i = data.steps.indexOf(step);
  if (i < 0) throw new RangeError(`step ${step} is not a recorded checkpoint (${data.steps.join(", ")})`);
  let kIndex = 0;
  for (let j = 1; j < data.ks.length; j++) {
    if (Math.abs(data.ks[j] - k) < Math.abs(data.ks[kIndex] - k)) kIndex = j;
  }
  const variants = {};
  for (const key of data.variants) {
    const losses = data.losses[key][i];
    const range = Math.max(...losses) - Math.min(...losses);
    variants[key] = { losses, loss0: data.loss0[key][i], range, atK: losses[kIndex] };
  }
  return { index: i, kIndex, k: data.ks[kIndex], variants };
}

// A ratio as LossSliceExplorer's titles print it: a whole number from 10 on, else two significant digits
export function ratioText(ratio) {
  return ratio >= 10 ? pyFixed(ratio, 0) : formatG(ratio, 2);
}

// The finding at that checkpoint, as LossSliceExplorer.title writes it.
export function sliceTitle(data, slice, step) {
  const v = slice.variants;
  if (v.plain && v.bn && v.bn.range > 0 && v.plain.range > 0) {
    const ratio = v.plain.range / v.bn.range;
    return ratio >= 1
      ? `Step ${step}: along the gradient the loss varies ${ratioText(ratio)}x less with BN than without`
      : `Step ${step}: here the loss varies ${ratioText(1 / ratio)}x more with BN than without`;
  }
  return `Step ${step}: the loss along the gradient`;
}

export function sliceReadout(data, slice) {
  const rows = {};
  for (const key of data.variants) {
    const v = slice.variants[key];
    rows[data.labels[key] ?? key] = [formatG(v.range, 3), formatG(v.loss0, 4), formatG(v.atK, 4)];
  }
  return table(rows, ["", "loss range over k", "L(θ)", `L(θ − k·lr·g) at k = ${formatG(slice.k, 3)}`]);
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const kStep = data.ks.length > 1 ? data.ks[1] - data.ks[0] : 1;
  const specs = [
    { name: "step", label: "training step", kind: "options", options: data.steps, value: v0.step, main: true,
      width: "260px", format: (s) => String(s) },
    { name: "k", label: "step size k", kind: "range", min: data.ks[0], max: data.ks[data.ks.length - 1],
      step: kStep, value: v0.k, width: "200px" },
  ];
  explorerFrame(el, "LossSliceExplorer", specs, (v, figure) => {
    const slice = sliceAt(data, v);
    const ks = [0, ...data.ks];
    const all = [];
    for (const key of data.variants) all.push(slice.variants[key].loss0, ...slice.variants[key].losses);
    const [ax] = figure.panels(1, 1, { top: 30, left: 64 });
    ax.setup({ xlim: [0, data.ks[data.ks.length - 1] * 1.02], ylim: paddedRange(all, 0.06),
               xlabel: "step along −gradient, k (multiples of lr · ||g||)", ylabel: "training loss on the batch",
               title: sliceTitle(data, slice, v.step) });
    for (const key of data.variants) {
      ax.line(ks, [slice.variants[key].loss0, ...slice.variants[key].losses], { color: data.colors[key], width: 2 });
    }
    ax.vline(slice.k, { color: "#000", width: 1, dash: [5, 3] });
    ax.legend(data.variants.map((key) => ({ label: data.labels[key] ?? key, color: data.colors[key] })),
              { corner: "upper left" });
    return sliceReadout(data, slice);
  }, { width: 900, height: 340 });
}

export default { render };
