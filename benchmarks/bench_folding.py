"""Inference time of a conv classifier with its BN layers folded into the convs, against the same
model unfolded, in eval mode under torch.no_grad().

Two models, conv3x3-BN-ReLU blocks then a 2x2 max-pool and a linear head: lesson 06's digits net
(1x8x8 input, 16 and 32 channels) and a CIFAR-sized one (3x32x32, 32/64/128 channels); each with
torch's BatchNorm2d and with bnlab's, at batch 1 and batch 256. Both versions are timed in
interleaved rounds (so drifting machine load hits both alike), each round the median of several
calls; printed: the median over rounds of the per-round ratio folded / unfolded, and the speed-up.
Run: make bench, or
    python benchmarks/bench_folding.py [--threads 1] [--rounds 5] [--repeats 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _report import Row, emit
from torch import nn

import bnlab
from bnlab.folding import count_batchnorms, fold_batchnorm

try:  # lesson 06's builder, when this checkout has it
    from bnlab.models import conv_net
except ImportError:
    conv_net = None

MODELS = {  # name: (in_channels, image_size, widths)
    "digits 1x8x8, 16/32 ch": (1, 8, (16, 32)),
    "3x32x32, 32/64/128 ch": (3, 32, (32, 64, 128)),
}
NORMS = {"torch_bn": nn.BatchNorm2d, "bn": bnlab.BatchNorm2d}


def build(in_channels: int, image_size: int, widths: tuple[int, ...], norm: str) -> nn.Sequential:
    """[conv3x3 (no bias) -> BN -> ReLU] per width -> maxpool 2 -> flatten -> linear (10 classes)."""
    if conv_net is not None:
        return conv_net(in_channels=in_channels, num_classes=10, widths=widths, norm=norm, image_size=image_size)
    layers: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), NORMS[norm](width), nn.ReLU()]
        channels = width
    layers += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(channels * (image_size // 2) ** 2, 10)]
    return nn.Sequential(*layers)


def time_call(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 1) -> float:
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def with_running_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A few training-mode batches, so that the running statistics are not the initial 0 and 1."""
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(x * 2 + 1)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="calls per round (fewer for slow ones)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write the rows here (make bench's report)")
    args = parser.parse_args()
    rows = []
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"eval-mode inference under no_grad, float32 on {args.device}, {args.threads} thread(s), "
          f"torch {torch.__version__}; models from {'bnlab.models.conv_net' if conv_net else 'plain torch'}")
    print(f"{'model':<24} {'BN':<9} {'batch':>5} {'unfolded ms':>12} {'folded ms':>10} "
          f"{'folded/unfolded':>16} {'speed-up':>9} {'max |diff|':>11}")
    for model_name, (in_channels, size, widths) in MODELS.items():
        for norm in NORMS:
            model = build(in_channels, size, widths, norm).to(args.device)
            model = with_running_stats(model, torch.randn(32, in_channels, size, size, device=args.device))
            folded = fold_batchnorm(model)
            assert count_batchnorms(folded) == 0, "a BN was left unfolded"
            for batch in args.batches:
                x = torch.randn(batch, in_channels, size, size, device=args.device)
                with torch.no_grad():
                    diff = float((folded(x) - model(x)).abs().max())
                # about half a second of calls a round, and at least one (the big model at batch
                # 256 takes seconds a call, long enough to time alone)
                repeats = max(1, min(args.repeats, int(0.5 / max(time_call(model, x, 1), 1e-6))))
                unfolded_times, folded_times = [], []
                for _ in range(args.rounds):
                    unfolded_times.append(time_call(model, x, repeats))
                    folded_times.append(time_call(folded, x, repeats))
                ratio = statistics.median(f / u for f, u in zip(folded_times, unfolded_times))
                print(f"{model_name:<24} {norm:<9} {batch:>5} {statistics.median(unfolded_times) * 1e3:>12.3f} "
                      f"{statistics.median(folded_times) * 1e3:>10.3f} {ratio:>16.2f} {1 / ratio:>8.2f}x "
                      f"{diff:>11.1e}")
                rows.append(Row(f"inference folded / unfolded, {model_name}, {norm}, batch {batch}",
                                statistics.median(folded_times) * 1e3, statistics.median(unfolded_times) * 1e3,
                                "ms", ratio=ratio, note="eval under no_grad; median of per-round ratios"))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
