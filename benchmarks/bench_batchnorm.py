"""Speed of bnlab.batch_norm (eager and compiled) against torch.nn.functional.batch_norm.

Every ratio is ours / torch from interleaved rounds (ours, then torch, then torch, then ours ...,
so that drifting machine load hits both alike), each round the median of several repetitions,
and reported as the median over rounds. Small VMs are noisy: single rounds range widely while
the median is stable; the 1-minute load average is printed with the figures.

Measures (targets of issue 13 in brackets):
  * forward + backward, training, at each --threads count: eager [<= 1.0], compiled [<= 0.8]
    and the compile time of the first call (forward and backward);
  * forward only, eval mode (reported);
  * the memory-traffic limit: the time the fewest passes over x-sized tensors take at the
    measured copy bandwidth (``torch.empty_like(x).copy_(x)`` timed, 2 * x.nbytes per copy).
    The fewest passes of training BN: forward, read x for mu_B and sigma2_B (one pass with a
    one-pass variance), then read x and write y; backward, read dy and x for sum dy and
    sum dy * x_hat, then read dy and x and write dx. 3 + 5 = 8 passes of x.nbytes, so
    limit = 8 * x.nbytes / bandwidth = 4 copies. Each implementation as a multiple of it
    (ours eager [<= 2.0], torch and compiled reported);
  * a training step (forward + backward) at batch 2 ("small inputs"): the BN module alone on
    --small-shape, and lesson 08's conv net (bnlab.models.conv_net, input (2, 1, 8, 8)) built with
    norm='bn' against norm='torch_bn' [<= 1.3 each].

Run: make bench, or
    python benchmarks/bench_batchnorm.py [--shape 64 64 32 32] [--threads 1 2] [--repeats 15]
        [--rounds 5] [--device cpu] [--no-compiled] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _report import Row, emit
from torch import nn

from bnlab import BatchNorm2d, batch_norm, batch_norm_compiled
from bnlab.models import conv_net


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _median_time(step, repeats, device, warmup=2) -> float:
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(ours, theirs, repeats, rounds, device) -> tuple[float, float, list[float]]:
    """(median time of ours, of theirs, sorted per-round ratios), alternating which goes first."""
    t_ours, t_theirs, ratios = [], [], []
    for r in range(rounds):
        pair = [ours, theirs] if r % 2 == 0 else [theirs, ours]
        times = {id(f): _median_time(f, repeats, device) for f in pair}
        t_ours.append(times[id(ours)])
        t_theirs.append(times[id(theirs)])
        ratios.append(t_ours[-1] / t_theirs[-1])
    return statistics.median(t_ours), statistics.median(t_theirs), sorted(ratios)


def training_step(fn, x, weight, bias, grad, running):
    # The previous step's output is released only once the next one exists, as `out = model(x)`
    # does in a training loop. (Freeing everything first lets glibc hand the memory back to the OS,
    # and each fresh 16 MiB tensor then costs ~2.5 ms of page faults: that measures the allocator.)
    last = []

    def step():
        for t in (x, weight, bias):
            t.grad = None
        out = fn(x, *running, weight, bias, training=True, momentum=0.1, eps=1e-5)
        out.backward(grad)
        last[:] = [out]
    return step


def eval_step(fn, x, weight, bias, running):
    def step():
        with torch.no_grad():
            fn(x, *running, weight, bias, training=False, momentum=0.1, eps=1e-5)
    return step


def module_step(module, x, grad):
    def step():
        module.zero_grad(set_to_none=True)
        module(x).backward(grad)
    return step


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 32, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--small-shape", type=int, nargs=4, default=[2, 16, 8, 8],
                        help="input of the batch-2 BN module step (N, C, H, W)")
    parser.add_argument("--no-compiled", action="store_true", help="skip batch_norm_compiled (no compile time)")
    parser.add_argument("--json", default=None, help="write the rows here (benchmarks/_report.py)")
    args = parser.parse_args()
    torch.manual_seed(0)
    dev, shape, C = args.device, tuple(args.shape), args.shape[1]
    x = torch.randn(shape, device=dev, requires_grad=True)
    weight = torch.randn(C, device=dev, requires_grad=True)
    bias = torch.randn(C, device=dev, requires_grad=True)
    grad = torch.randn(shape, device=dev)

    def running():
        return torch.zeros(C, device=dev), torch.ones(C, device=dev) + 0.5

    rows: list[Row] = []
    print(f"input {shape} float32 on {dev}, torch {torch.__version__}, {os.cpu_count()} cores")
    compiled_seconds = None
    if not args.no_compiled:
        start = time.perf_counter()
        training_step(batch_norm_compiled, x, weight, bias, grad, running())()
        _sync(dev)
        compiled_seconds = time.perf_counter() - start
        print(f"batch_norm_compiled first call (compiles forward and backward): {compiled_seconds:.1f} s")
        rows.append(Row("batch_norm_compiled: compile time of the first call", compiled_seconds, None, "s",
                        note=f"dynamic=False: each new shape compiles again; {load()}"))

    for threads in args.threads:
        torch.set_num_threads(threads)
        note = f"{threads} thread(s), {load()}"
        print(f"\n-- {threads} thread(s), {load()}")
        # bandwidth: one copy reads and writes x.nbytes
        nbytes = x.numel() * x.element_size()
        t_copy = _median_time(lambda: torch.empty_like(x).copy_(x), 3 * args.repeats, dev)
        bandwidth = 2 * nbytes / t_copy
        limit = 8 * nbytes / bandwidth
        print(f"copy bandwidth {bandwidth / 1e9:6.1f} GB/s; limit (8 passes of {nbytes / 2**20:.0f} MiB): "
              f"{limit * 1e3:6.2f} ms")

        ref = training_step(F.batch_norm, x, weight, bias, grad, running())
        ours, theirs, ratios = interleaved(training_step(batch_norm, x, weight, bias, grad, running()), ref,
                                           args.repeats, args.rounds, dev)
        print(f"fwd+bwd eager    ours {ours * 1e3:7.2f} ms  torch {theirs * 1e3:7.2f} ms  ratio "
              f"{statistics.median(ratios):.2f}  (rounds {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.00)")
        rows.append(Row(f"fwd+bwd {shape} eager, {threads} thread(s), ours / F.batch_norm",
                        ours * 1e3, theirs * 1e3, "ms",
                        target=1.0, ratio=statistics.median(ratios), note=note))
        rows.append(Row(f"fwd+bwd eager, {threads} thread(s), ours / memory-traffic limit",
                        ours * 1e3, limit * 1e3, "ms", target=2.0,
                        note=f"8 passes at {bandwidth / 1e9:.1f} GB/s; {note}"))
        rows.append(Row(f"fwd+bwd, {threads} thread(s), torch / memory-traffic limit",
                        theirs * 1e3, limit * 1e3, "ms", note=note))
        print(f"  / limit: ours {ours / limit:.2f}  torch {theirs / limit:.2f}  (target ours <= 2.00)")

        if compiled_seconds is not None:
            comp, theirs_c, ratios_c = interleaved(
                training_step(batch_norm_compiled, x, weight, bias, grad, running()), ref,
                args.repeats, args.rounds, dev)
            print(f"fwd+bwd compiled ours {comp * 1e3:7.2f} ms  torch {theirs_c * 1e3:7.2f} ms  ratio "
                  f"{statistics.median(ratios_c):.2f}  (rounds {', '.join(f'{r:.2f}' for r in ratios_c)}; "
                  f"target <= 0.80); / limit {comp / limit:.2f}")
            rows.append(Row(f"fwd+bwd {shape} compiled, {threads} thread(s), ours / F.batch_norm",
                            comp * 1e3, theirs_c * 1e3, "ms",
                            target=0.8, ratio=statistics.median(ratios_c), note=note))
            rows.append(Row(f"fwd+bwd compiled, {threads} thread(s), ours / memory-traffic limit",
                            comp * 1e3, limit * 1e3, "ms", note=note))

        ev, ev_t, ev_r = interleaved(eval_step(batch_norm, x.detach(), weight, bias, running()),
                                     eval_step(F.batch_norm, x.detach(), weight, bias, running()),
                                     args.repeats, args.rounds, dev)
        print(f"forward eval     ours {ev * 1e3:7.2f} ms  torch {ev_t * 1e3:7.2f} ms  ratio "
              f"{statistics.median(ev_r):.2f}")
        rows.append(Row(f"forward {shape} eval, {threads} thread(s), ours / F.batch_norm", ev * 1e3, ev_t * 1e3, "ms",
                        ratio=statistics.median(ev_r), note=note))

    # batch 2: per-call overhead, not bandwidth, decides; one thread as lesson 08's small nets
    torch.set_num_threads(1)
    small = torch.randn(args.small_shape, device=dev, requires_grad=True)
    small_grad = torch.randn(args.small_shape, device=dev)
    modules = [cls(args.small_shape[1]).to(dev) for cls in (BatchNorm2d, nn.BatchNorm2d)]
    repeats = 20 * args.repeats
    sm, sm_t, sm_r = interleaved(module_step(modules[0], small, small_grad), module_step(modules[1], small, small_grad),
                                 repeats, args.rounds, dev)
    print(f"\nbatch-2 BN module step {tuple(args.small_shape)}: ours {sm * 1e6:6.1f} us  torch {sm_t * 1e6:6.1f} us  "
          f"ratio {statistics.median(sm_r):.2f}  (target <= 1.30; 1 thread, {load()})")
    rows.append(Row(f"batch-2 BN module step {tuple(args.small_shape)}, bnlab.BatchNorm2d / nn.BatchNorm2d",
                    sm * 1e6, sm_t * 1e6, "us", target=1.3, ratio=statistics.median(sm_r),
                    note=f"forward + backward, 1 thread, {load()}"))

    nets = []
    for norm in ("bn", "torch_bn"):
        torch.manual_seed(0)
        nets.append(conv_net(norm=norm).to(dev))
    images = torch.randn(2, 1, 8, 8, device=dev)
    labels = torch.tensor([3, 7], device=dev)

    def net_step(net):
        def step():
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(images), labels).backward()
        return step

    nt, nt_t, nt_r = interleaved(net_step(nets[0]), net_step(nets[1]), repeats, args.rounds, dev)
    print(f"batch-2 lesson 08 conv net step: ours {nt * 1e6:6.1f} us  torch {nt_t * 1e6:6.1f} us  "
          f"ratio {statistics.median(nt_r):.2f}  (target <= 1.30)")
    rows.append(Row("batch-2 conv_net step (2, 1, 8, 8), norm='bn' / norm='torch_bn'", nt * 1e6, nt_t * 1e6, "us",
                    target=1.3, ratio=statistics.median(nt_r),
                    note=f"forward + loss + backward, 1 thread, {load()}"))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
