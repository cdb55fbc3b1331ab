"""What a bnlab.probes.Probe costs: time per training step, and memory per record.

Time: the lesson-04 MLP (digits, 64-100-100-100-10 sigmoids, init N(0, 0.1^2), batch 60, SGD lr
0.5), trained by bnlab.train.train_classifier without a probe and with probe=dict(every=k,
capture="input") (default bins, no per-unit percentiles), for norm=None and norm='bn'. Every round
trains a fresh, identically seeded model once per variant, one after the other (interleaved, so
drifting machine load hits all alike); a round's time per step is History.seconds / steps (the
training loop only; one test-set evaluation at the end, the same in every variant). Printed: the
median over rounds of ms per step, and the median over rounds of the per-round overhead
with / without - 1 (target: <= 25 % at every=1, <= 5 % at every=10). The same with sample=1024
(the documented option: percentiles and histograms of a subsample of <= 1,024 values per layer
and step). For reference also lesson 04's own probe as ioffe_fig1 runs it (FIG1_PROBE: every=10,
units=100, bins=64, plus a 500-example recording pass on each recorded step), and the same at
every=1.

Memory: Recording.nbytes of a probe with default settings (every=1, bins=40, grad_bins=40) on a
20-layer ReLU MLP of width 100 after 1,000 recorded steps (batch 16; target <= 50 MB), what it
held while attached (the tables' spare rows and the peak of Probe.buffer_nbytes, the copies
waiting for their statistics), and the growth of the process's peak resident set size (getrusage
ru_maxrss) during the probed run beyond the peak of the same run without a probe. Run: make bench, or
    python benchmarks/bench_probes.py [--threads 1] [--rounds 5] [--steps 300] [--records 1000] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys

import torch
import torch.nn.functional as F

from bnlab.data import digits
from bnlab.experiments import FIG1, FIG1_PROBE
from bnlab.models import mlp
from bnlab.probes import Probe
from bnlab.train import train_classifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _report import Row, emit  # noqa: E402

TARGET_OVERHEAD = {"every=1": 0.25, "every=10": 0.05, "every=1, sample=1024": 0.25, "every=10, sample=1024": 0.05}
SAMPLE = 1024
TARGET_BYTES = 50 * 2 ** 20


def seconds_per_step(data, norm, steps, probe=None, probe_batch=None) -> float:
    torch.manual_seed(0)
    model = mlp(data.num_features, FIG1["hidden"], data.num_classes, norm=norm,
                activation=FIG1["activation"], init=FIG1["init"])
    history = train_classifier(model, data, steps=steps, batch_size=FIG1["batch_size"], lr=FIG1["lr"],
                               eval_every=steps, device="cpu", progress=False, probe=probe,
                               probe_batch=probe_batch)
    return history.seconds / steps


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20


def deep_run(records: int, batch: int, probe_kwargs: dict | None):
    """records SGD steps of a 20-layer ReLU MLP (width 100) on random data; the probe's Recording or None."""
    torch.manual_seed(0)
    model = mlp(64, (100,) * 20, 10, norm=None, activation="relu", init="he")
    x, y = torch.randn(batch, 64), torch.randint(10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = Probe(model, optimizer=opt, **probe_kwargs) if probe_kwargs is not None else None
    if probe is not None:
        probe.__enter__()
    buffered = 0
    try:
        for _ in range(records):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if probe is not None:
                buffered = max(buffered, probe.buffer_nbytes)
    finally:
        if probe is not None:
            # before the exit trims the spare rows of the growable tables; reading nbytes flushes the
            # buffers, whose peak is counted separately
            capacity = probe.recording.nbytes + buffered
            probe.__exit__(None, None, None)
    return (probe.recording, capacity, buffered) if probe is not None else (None, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="training steps per variant and round")
    parser.add_argument("--records", type=int, default=1000, help="recorded steps for the memory measurement")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the memory measurement")
    parser.add_argument("--json", default=None, help="write the rows (benchmarks/_report.py) to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = digits()

    # ------------------------------------------------------------------ memory first: ru_maxrss is a high-water mark
    rss0 = peak_rss_mb()
    deep_run(args.records, args.batch, None)
    rss1 = peak_rss_mb()
    recording, capacity, buffered = deep_run(args.records, args.batch, dict(every=1))
    rss2 = peak_rss_mb()
    lesson_recording, _, _ = deep_run(args.records, args.batch, dict(every=1, units=100))

    # ------------------------------------------------------------------ time
    variants = {"no probe": dict()}
    variants.update({f"every={k}": dict(probe=dict(every=k, capture="input")) for k in (1, 10)})
    variants.update({f"every={k}, sample={SAMPLE}": dict(probe=dict(every=k, capture="input", sample=SAMPLE))
                     for k in (1, 10)})
    variants["lesson 04 (ioffe_fig1)"] = dict(probe=FIG1_PROBE, probe_batch=500)
    variants["lesson 04 at every=1"] = dict(probe=FIG1_PROBE | dict(every=1), probe_batch=500)
    norms = (None, "bn")
    for norm in norms:  # warm-up: first calls allocate and load kernels
        for kwargs in variants.values():
            seconds_per_step(data, norm, 20, **kwargs)
    times = {(norm, name): [] for norm in norms for name in variants}
    for _ in range(args.rounds):
        for norm in norms:
            for name, kwargs in variants.items():
                times[(norm, name)].append(seconds_per_step(data, norm, args.steps, **kwargs))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"lesson-04 MLP 64-100-100-100-10 sigmoid, batch {FIG1['batch_size']}, SGD lr {FIG1['lr']}, "
          f"{args.threads} thread(s), torch {torch.__version__}, {args.rounds} rounds x {args.steps} steps, "
          f"load {load:.2f}")
    print("probe: capture='input', default bins (40) and grad_bins (40), units=0; "
          f"lesson 04 = FIG1_PROBE {FIG1_PROBE} + probe_batch=500")
    rows = []
    for norm in norms:
        base = times[(norm, "no probe")]
        print(f"norm={norm!r}: without probe {statistics.median(base) * 1e3:6.3f} ms/step (median of rounds)")
        for name in list(variants)[1:]:
            t = times[(norm, name)]
            overhead = sorted(w / b - 1 for w, b in zip(t, base))
            limit = TARGET_OVERHEAD.get(name)
            target = f"  (target <= {limit:.0%})" if limit is not None else ""
            print(f"  {name:<23} {statistics.median(t) * 1e3:6.3f} ms/step   overhead "
                  f"{statistics.median(overhead):+7.1%} (median; rounds {', '.join(f'{o:+.0%}' for o in overhead)})"
                  f"{target}")
            note = f"ratio: median of {args.rounds} rounds of with / without; {args.threads} thread(s), load {load:.2f}"
            rows.append(Row(f"probe {name}, norm={norm}: ms per training step with / without",
                            statistics.median(t) * 1e3, statistics.median(base) * 1e3, "ms/step",
                            None if limit is None else 1 + limit, ratio=1 + statistics.median(overhead), note=note))

    layers = len(recording.layers)
    print(f"memory: 20-layer ReLU MLP (width 100), {len(recording)} recorded steps (every=1, batch {args.batch}), "
          f"{layers} layers, {len(recording.params)} parameters")
    print(f"  Recording.nbytes, default bins (40/40):  {recording.nbytes / 2 ** 20:6.2f} MB "
          f"(target <= {TARGET_BYTES / 2 ** 20:.0f} MB); {recording.nbytes / len(recording) / layers:.0f} bytes "
          f"per layer and record (all tables); {capacity / 2 ** 20:.2f} MB while attached (tables grow by "
          f"doubling; buffers at their peak {buffered / 2 ** 20:.2f} MB)")
    print(f"  with units=100 (per-unit percentiles): {lesson_recording.nbytes / 2 ** 20:6.2f} MB")
    print(f"  peak RSS: +{rss1 - rss0:.1f} MB for the run without probe, a further +{rss2 - rss1:.1f} MB "
          f"for the same run with the probe (ru_maxrss, a process high-water mark)")
    memory = f"20-layer ReLU MLP, {len(recording)} records, every=1, batch {args.batch}"
    rows += [Row("probe memory: Recording.nbytes", recording.nbytes / 2 ** 20, TARGET_BYTES / 2 ** 20, "MB", 1.0,
                 note=memory),
             Row("probe memory while attached: tables + peak buffers", capacity / 2 ** 20, TARGET_BYTES / 2 ** 20,
                 "MB", 1.0, note=memory),
             Row("probe memory: peak RSS growth over the same run without probe", rss2 - rss1, None, "MB",
                 note=memory + "; ru_maxrss")]
    emit(rows, args.json)


if __name__ == "__main__":
    main()
