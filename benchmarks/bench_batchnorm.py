"""Forward + backward time of bnlab.batch_norm against torch.nn.functional.batch_norm.

Times both in interleaved rounds (so drifting machine load hits both alike), each round the median
of several repetitions, and prints the median over rounds of the per-round ratio (target: ours <= 2x
torch on CPU). Small VMs are noisy: single rounds ranged 1.1-1.8 while the median was stable. Run: make bench, or
    python benchmarks/bench_batchnorm.py [--shape 64 64 32 32] [--threads 2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bnlab import batch_norm


def time_fwd_bwd(fn, x, weight, bias, running_mean, running_var, grad, repeats, warmup=3):
    times = []
    for i in range(warmup + repeats):
        for t in (x, weight, bias):
            t.grad = None
        start = time.perf_counter()
        out = fn(x, running_mean, running_var, weight, bias, training=True, momentum=0.1, eps=1e-5)
        out.backward(grad)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 64, 32, 32])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape, C = tuple(args.shape), args.shape[1]
    x = torch.randn(shape, device=args.device, requires_grad=True)
    weight = torch.randn(C, device=args.device, requires_grad=True)
    bias = torch.randn(C, device=args.device, requires_grad=True)
    grad = torch.randn(shape, device=args.device)

    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(time_fwd_bwd(batch_norm, x, weight, bias, torch.zeros(C, device=args.device),
                                 torch.ones(C, device=args.device), grad, args.repeats))
        theirs.append(time_fwd_bwd(F.batch_norm, x, weight, bias, torch.zeros(C, device=args.device),
                                   torch.ones(C, device=args.device), grad, args.repeats))
    ratios = sorted(o / t for o, t in zip(ours, theirs))
    print(f"input {shape} float32 on {args.device}, {args.threads} thread(s), torch {torch.__version__}")
    print(f"forward+backward  bnlab.batch_norm:  {statistics.median(ours) * 1e3:8.2f} ms (median of rounds)")
    print(f"forward+backward  F.batch_norm:      {statistics.median(theirs) * 1e3:8.2f} ms")
    print(f"ratio ours / torch per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"ratio ours / torch: {statistics.median(ratios):.2f}  (median; target <= 2.00)")


if __name__ == "__main__":
    main()
