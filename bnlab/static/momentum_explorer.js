// Lesson 03's momentum explorer: the running mean BN keeps of a drifting feature, for a chosen
// momentum. Per move, in the browser: the running average of the recorded batch means and how far it
// trails the true mean, the numbers MomentumExplorer.compute and bnlab.experiments.ramp_lag give.
import { explorerFrame, modelData, paddedRange } from "./explorer.js";
import { formatG, rampLag, runningAverage } from "./bn.js";

// The running mean of one kind of drift and its lag: the mean of true - running over the last
// min(data.last, steps) steps; for a ramp also the theory drift (1 - m) / m it tends to.
export function momentumRun(data, { momentum, kind }) {
  const batchMeans = data.batch_means[kind], trueMean = data.true_mean[kind];
  if (!batchMeans) throw new RangeError(`unknown drift ${JSON.stringify(kind)}`);
  const running = runningAverage(batchMeans, momentum);
  const last = Math.min(data.last, trueMean.length);
  const lag = rampLag(trueMean, running, last);
  const theory = kind === "ramp" ? (data.drift * (1 - momentum)) / momentum : null;
  return { batchMeans, trueMean, running, last, lag, theory };
}

// Python's format(x, "+.{p}f")
function signedFixed(x, p) {
  return (x < 0 || Object.is(x, -0) ? "-" : "+") + Math.abs(x).toFixed(p);
}

export function momentumReadout(r, momentum) {
  let text = `<p>momentum ${formatG(momentum, 3)} (Keras momentum ${formatG(1 - momentum, 3)}): averages over about `
    + `${(1 / momentum).toFixed(0)} batches; over the last ${r.last} steps the running mean is on average `
    + `${signedFixed(r.lag, 3)} behind the true mean`;
  if (r.theory !== null) text += ` (theory for a ramp: drift·(1−m)/m = ${r.theory.toFixed(3)})`;
  return text + "</p>";
}

function render({ model, el }) {
  const data = modelData(model);
  const v0 = data.initial;
  const [lo, hi] = data.momentum_range;
  const specs = [
    { name: "momentum", label: "momentum", kind: "log", min: lo, max: hi, step: 0.1, value: v0.momentum, main: true,
      width: "300px" },
    { name: "kind", label: "drift", kind: "select", options: Object.keys(data.batch_means), value: v0.kind },
  ];
  explorerFrame(el, "MomentumExplorer", specs, (v, figure) => {
    const r = momentumRun(data, v);
    const steps = Array.from(r.batchMeans, (_, t) => t);
    const [ax] = figure.panels(1, 1, { top: 30 });
    ax.setup({ xlim: [-0.02 * steps.length, 1.02 * (steps.length - 1)],
               ylim: paddedRange([...r.batchMeans, ...r.trueMean, ...r.running], 0.05),
               xlabel: "training step", ylabel: "mean of the feature (its units)",
               title: "A small momentum averages more, and lags further behind" });
    ax.points(steps, r.batchMeans, { color: data.colors.plain, size: 3 });
    ax.line(steps, r.trueMean, { color: "#000", width: 1, dash: [5, 3] });
    ax.line(steps, r.running, { color: data.running_color, width: 2 });
    ax.legend([{ label: "batch mean", color: data.colors.plain, kind: "dots" },
               { label: "true mean", color: "#000", dash: [5, 3] },
               { label: `running_mean, momentum ${formatG(v.momentum, 3)}`, color: data.running_color }],
              { corner: "upper left" });
    return momentumReadout(r, v.momentum);
  }, { width: 900, height: 330 });
}

export default { render };
