// Lesson 09's loss-slice explorer: the training loss along the step SGD is about to take,
// L(theta - k lr g) against k, at recorded checkpoints, one curve per variant (Santurkar et al.
// 2018, Figure 4), for one seed or a chosen one of several. Per move, in the browser: picking the
// checkpoint's (and seed's) slices, each variant's loss range over k in every seed, the loss at the
// chosen k, and the title's ratio; LossSliceExplorer computes the same.
import { explorerFrame, modelData, paddedRange, table } from "./explorer.js";
import { formatG, pyFixed } from "./bn.js";

// With seeds (data.seeds) every variant's losses and loss0 are [seed][checkpoint]..., without
// [checkpoint]...: the runs of one seed, as a list of one.
function seedRuns(data, values) {
  return data.seeds ? values : [values];
}

// The slices of one checkpoint and seed (ignored without data.seeds; else one of them): per variant
// the losses over data.ks, L(theta), their range (max - min over ks, as
// bnlab.landscape.GradientPath.loss_range), the loss at the recorded k nearest to k (the first of two
// equally near, as numpy's argmin), and the range in every seed (seedRanges, in data.seeds' order).
export function sliceAt(data, { step, k, seed }) {
  const i = data.steps.indexOf(step);
  if (i < 0) throw new RangeError(`step ${step} is not a recorded checkpoint (${data.steps.join(", ")})`);
  const s = data.seeds ? data.seeds.indexOf(seed) : 0;
  if (s < 0) throw new RangeError(`seed ${seed} is not one of the runs' seeds (${data.seeds.join(", ")})`);
  let kIndex = 0;
  for (let j = 1; j < data.ks.length; j++) {
    if (Math.abs(data.ks[j] - k) < Math.abs(data.ks[kIndex] - k)) kIndex = j;
  }
  const range = (losses) => Math.max(...losses) - Math.min(...losses);
  const variants = {};
  for (const key of data.variants) {
    const seedRanges = seedRuns(data, data.losses[key]).map((byStep) => range(byStep[i]));
    const losses = seedRuns(data, data.losses[key])[s][i];
    variants[key] = { losses, loss0: seedRuns(data, data.loss0[key])[s][i], range: seedRanges[s],
                      atK: losses[kIndex], seedRanges };
  }
  return { index: i, kIndex, k: data.ks[kIndex], seedIndex: data.seeds ? s : null,
           seed: data.seeds ? data.seeds[s] : null, variants };
}

// A ratio as LossSliceExplorer's titles print it: a whole number from 10 on, else two significant digits
export function ratioText(ratio) {
  return ratio >= 10 ? pyFixed(ratio, 0) : formatG(ratio, 2);
}

// The finding at that checkpoint (and seed), as LossSliceExplorer.title writes it.
export function sliceTitle(data, slice, step) {
  const v = slice.variants;
  const where = data.seeds ? `Seed ${slice.seed}, step ${step}` : `Step ${step}`;
  if (v.plain && v.bn && v.bn.range > 0 && v.plain.range > 0) {
    const ratio = v.plain.range / v.bn.range;
    return ratio >= 1
      ? `${where}: along the gradient the loss varies ${ratioText(ratio)}x less with BN than without`
      : `${where}: here the loss varies ${ratioText(1 / ratio)}x more with BN than without`;
  }
  return `${where}: the loss along the gradient`;
}

// With seeds a last column gives each variant's loss range in every seed, the drawn one in bold: does
// the finding hold in all of them? (With one seed that is the first column.)
export function sliceReadout(data, slice) {
  const rows = {};
  for (const key of data.variants) {
    const v = slice.variants[key];
    const cells = [formatG(v.range, 3), formatG(v.loss0, 4), formatG(v.atK, 4)];
    if (data.seeds) {
      cells.push(v.seedRanges.map((r, s) => (s === slice.seedIndex ? `<b>${formatG(r, 3)}</b>` : formatG(r, 3)))
        .join(" / "));
    }
    rows[data.labels[key] ?? key] = cells;
  }
  const header = ["", "loss range over k", "L(θ)", `L(θ − k·lr·g) at k = ${formatG(slice.k, 3)}`];
  if (data.seeds) header.push(`loss range, seeds ${data.seeds.join(" / ")}`);
  return table(rows, header);
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
  if (data.seeds) specs.push({ name: "seed", label: "seed", kind: "select", options: data.seeds, value: v0.seed });
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
