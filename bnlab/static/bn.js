// What an explorer computes per slider move, in the browser: BN of one feature over a fixed sample,
// BN's backward terms, the running average, and picking a record. The same formulas as
// bnlab.reference (tests/js/bn.test.mjs checks these against numbers bnlab computed).

// Python's format(x, ".{p}g"): p significant digits, trailing zeros dropped, exponent beyond 1e-5..1e{p}.
export function formatG(x, p = 3) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
  if (x === 0) return "0";
  const exponent = Math.floor(Math.log10(Math.abs(Number(x.toPrecision(p)))));
  if (exponent < -4 || exponent >= p) {
    const [mantissa, e] = x.toExponential(p - 1).split("e");
    const m = mantissa.includes(".") ? mantissa.replace(/\.?0+$/, "") : mantissa;
    const n = Number(e);
    return `${m}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
  }
  const fixed = x.toFixed(Math.max(0, p - 1 - exponent));
  return fixed.includes(".") ? fixed.replace(/\.?0+$/, "") : fixed;
}

export function mean(values) {
  let s = 0;
  for (const v of values) s += v;
  return s / values.length;
}

// biased (divides by n), as BN's batch variance and NumPy's std
export function variance(values) {
  const mu = mean(values);
  let s = 0;
  for (const v of values) s += (v - mu) * (v - mu);
  return s / values.length;
}

export function std(values) {
  return Math.sqrt(variance(values));
}

export function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

// BN of one feature over a batch x (training mode):
//   mu = mean(x), var = mean((x - mu)^2), x_hat = (x - mu) / sqrt(var + eps), y = gamma x_hat + beta
export function batchnormForward(x, gamma = 1, beta = 0, eps = 1e-5) {
  const mu = mean(x);
  const v = variance(x);
  const invStd = 1 / Math.sqrt(v + eps);
  const xHat = Array.from(x, (xi) => (xi - mu) * invStd);
  const y = xHat.map((h) => gamma * h + beta);
  return { y, xHat, mu, var: v, invStd };
}

// BN's dx in training mode split into the three terms of the compact formula, each times
// gamma / (m sqrt(var + eps)):  own m dy_i,  mean -sum_j dy_j,  scale -x_hat_i sum_j dy_j x_hat_j
export function batchnormBackwardTerms(xHat, dy, gamma, invStd) {
  const m = xHat.length;
  if (dy.length !== m) throw new RangeError(`dy has ${dy.length} values, x_hat has ${m}`);
  const k = (gamma * invStd) / m;
  let sumDy = 0, sumDyXhat = 0;
  for (let i = 0; i < m; i++) { sumDy += dy[i]; sumDyXhat += dy[i] * xHat[i]; }
  const own = dy.map((d) => k * m * d);
  const meanTerm = new Array(m).fill(-k * sumDy);
  const scale = xHat.map((h) => -k * h * sumDyXhat);
  const dx = own.map((o, i) => o + meanTerm[i] + scale[i]);
  return { own, mean: meanTerm, scale, dx };
}

// The running estimate BN keeps (PyTorch's convention): r_t = (1 - momentum) r_{t-1} + momentum b_t,
// r_0 = initial; momentum null is the cumulative average.
export function runningAverage(values, momentum, initial = 0) {
  if (momentum !== null && !(momentum >= 0 && momentum <= 1)) {
    throw new RangeError(`momentum must be in [0, 1] or null, got ${momentum}`);
  }
  const out = new Array(values.length);
  let r = initial;
  for (let t = 0; t < values.length; t++) {
    const factor = momentum === null ? 1 / (t + 1) : momentum;
    r = (1 - factor) * r + factor * values[t];
    out[t] = r;
  }
  return out;
}

// mean over the last steps of true - running: how far the running mean trails
export function rampLag(trueMean, running, last = 100) {
  const n = trueMean.length;
  let s = 0;
  for (let t = n - last; t < n; t++) s += trueMean[t] - running[t];
  return s / last;
}

// The record at or just before a step, in ascending recorded steps (clipped to the first and last).
export function recordIndex(steps, step) {
  let lo = 0, hi = steps.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] <= step) lo = mid + 1; else hi = mid;
  }
  return Math.min(Math.max(lo - 1, 0), steps.length - 1);
}

// bins + 1 equal-width edges over the values' range (one unit wide around a constant)
export function histogramEdges(values, bins = 30) {
  let [lo, hi] = extent(values);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  // as numpy.linspace: i * step + lo, the last edge exactly hi
  const step = (hi - lo) / bins;
  const edges = Array.from({ length: bins + 1 }, (_, i) => i * step + lo);
  edges[bins] = hi;
  return edges;
}

// counts per bin as numpy.histogram: half-open bins, the last one closed
export function histogram(values, edges) {
  const bins = edges.length - 1;
  const counts = new Array(bins).fill(0);
  const lo = edges[0], hi = edges[bins], width = (hi - lo) / bins;
  for (const v of values) {
    if (v < lo || v > hi) continue;
    let i = Math.floor((v - lo) / width);
    if (i >= bins) i = bins - 1;
    // floating point can put a value just across an edge
    while (i > 0 && v < edges[i]) i--;
    while (i < bins - 1 && v >= edges[i + 1]) i++;
    counts[i]++;
  }
  return counts;
}

// Python's format(x, ".{d}f") and format(x, ".{d}e") (pyFixed, pyExp), for readouts that must read as
// the Python ones did: JavaScript rounds an exact tie (0.125 to 2 decimals) away from zero, Python to
// the even digit; nan and inf (null, from JSON, is nan: a value not recorded)
function pyHalfEven(x, d, method) {
  const shown = x[method](d);
  // d + 30 digits are exact (and far finer than a double's spacing): a tie reads 5 and zeros after digit d
  const [digits, exponent] = x[method](Math.min(100, d + 30)).split("e");
  if (digits.slice(-30) !== `5${"0".repeat(29)}`) return shown;
  const truncated = digits.slice(0, -30).replace(/\.$/, "");
  return Number(truncated.at(-1)) % 2 === 0 ? truncated + (exponent === undefined ? "" : `e${exponent}`) : shown;
}
export function pyFixed(x, d) {
  if (x === null || Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  return pyHalfEven(x, d, "toFixed");
}
export function pyExp(x, d) {
  if (x === null || !Number.isFinite(x)) return pyFixed(x, d);
  const [m, e] = pyHalfEven(x, d, "toExponential").split("e");
  const n = Number(e);
  return `${m}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
}
