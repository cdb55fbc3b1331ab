"""Redraw latency of the lesson 04/05 explorers, with lesson 01's ForwardPlayground for reference.

A redraw is what a student's slider move costs: setting a control's .value, which calls draw() and
renders the figure to PNG bytes (Explorer.update), timed with time.perf_counter. Built from short
real runs: ActivationExplorer from ioffe_fig1(None) and ioffe_fig1('bn') (300 steps, 30 records);
GradientFlowExplorer from digits, with trained curves for depth 10 / relu / he at every learning
rate (lr_sweep, 100 steps) so that moving the lr slider redraws real curves. Moves of each kind are
done in interleaved rounds (drifting machine load hits all alike); printed: the median over all
moves of each kind, next to the target (<= 100 ms on the CPU). Run: make bench, or
    python benchmarks/bench_widgets.py [--threads 1] [--rounds 3] [--moves 10]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402
from _report import Row, emit  # noqa: E402

from bnlab.data import digits  # noqa: E402
from bnlab.experiments import ioffe_fig1, lr_sweep  # noqa: E402
from bnlab.widgets import ActivationExplorer, ForwardPlayground, GradientFlowExplorer  # noqa: E402

TARGET_MS = 100.0


def move(control, values) -> float:
    """Seconds to set control.value to the next of values (a cycle) that differs from the current one."""
    value = next(values)
    if value == control.value:
        value = next(values)
    start = time.perf_counter()
    control.value = value
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--moves", type=int, default=10, help="moves of each kind per round")
    parser.add_argument("--json", default=None, help="write the rows here (make bench's report)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    data = digits()
    runs = {key: ioffe_fig1(norm, steps=300, data=data, progress=False, device="cpu").probe
            for key, norm in (("plain", None), ("bn", "bn"))}
    sweep = lr_sweep(GradientFlowExplorer.LRS, depth=10, steps=100, data=data, progress=False, device="cpu")
    built = time.perf_counter() - start
    activation = ActivationExplorer(runs)
    t0 = time.perf_counter()
    flow = GradientFlowExplorer(data, runs={(norm, 10, "relu", "he", lr): h for (norm, lr), h in sweep.items()},
                                depth=10, lr=1.0)
    flow_built = time.perf_counter() - t0
    playground = ForwardPlayground()

    steps = [int(s) for s in activation.steps]
    heatmap = ActivationExplorer(runs)
    heatmap.controls["quantity"].value = "activations over training"
    kinds = {
        # name: (explorer, control, cycle of values)
        "ActivationExplorer: step slider (histograms)":
            (activation, activation.controls["step"], itertools.cycle(steps)),
        "ActivationExplorer: step slider (over training)":
            (heatmap, heatmap.controls["step"], itertools.cycle(steps)),
        "ActivationExplorer: switch quantity":
            (activation, activation.controls["quantity"], itertools.cycle(ActivationExplorer.QUANTITIES)),
        "GradientFlowExplorer: depth slider":
            (flow, flow.controls["depth"], itertools.cycle(GradientFlowExplorer.DEPTHS)),
        "GradientFlowExplorer: lr slider":
            (flow, flow.controls["lr"], itertools.cycle(GradientFlowExplorer.LRS)),
        "ForwardPlayground: gamma slider (reference)":
            (playground, playground.controls["gamma"], itertools.cycle([0.5, 1.0, 1.5, 2.0, -1.0])),
    }
    for explorer, control, values in kinds.values():  # warm-up: first draws build fonts and caches
        for _ in range(3):
            move(control, values)
    # the depth moves are timed at lr 1.0 (trained at depth 10); the quantity switches leave the step slider
    flow.controls["lr"].value = 1.0
    times = {name: [] for name in kinds}
    redraws = {name: 0 for name in kinds}
    for _ in range(args.rounds):
        for name, (explorer, control, values) in kinds.items():
            if name == "GradientFlowExplorer: depth slider":
                flow.controls["lr"].value = 1.0
            before = explorer.redraws
            times[name] += [move(control, values) for _ in range(args.moves)]
            redraws[name] += explorer.redraws - before
    render = {}
    for explorer in (activation, flow, playground):
        samples = []
        for _ in range(args.moves):
            t = time.perf_counter()
            explorer.render()
            samples.append(time.perf_counter() - t)
        render[type(explorer).__name__] = statistics.median(samples) * 1e3

    print(f"{args.threads} thread(s), torch {torch.__version__}, matplotlib {matplotlib.__version__} (Agg, "
          f"{activation.DPI} dpi); runs built in {built:.1f} s, GradientFlowExplorer constructed in {flow_built:.1f} s")
    print(f"redraw = set a control's .value (draw + PNG render); {args.rounds} interleaved rounds x {args.moves} moves")
    rows = []
    for name, samples in times.items():
        ms = sorted(t * 1e3 for t in samples)
        flag = "" if "reference" in name else f"  (target <= {TARGET_MS:.0f} ms)"
        rows.append(Row(f"redraw, {name}", statistics.median(ms), None, "ms", ratio=statistics.median(ms) / TARGET_MS,
                        target=None if "reference" in name else 1.0,
                        note=f"Python redraw; ratio = median ms / {TARGET_MS:.0f} ms"))
        print(f"  {name:<48} {statistics.median(ms):7.1f} ms median, {ms[0]:6.1f}-{ms[-1]:6.1f} ms range, "
              f"{redraws[name]}/{len(ms)} redraws{flag}")
    print("of which the PNG render alone (Explorer.render, median): "
          + ", ".join(f"{name} {ms:.1f} ms" for name, ms in render.items()))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
