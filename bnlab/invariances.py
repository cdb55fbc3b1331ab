"""Ba, Kiros & Hinton 2016 ("Layer Normalization"), Table 1, checked on tensors: which changes to a
layer's weights or data leave its output unchanged under batch norm, weight norm and layer norm.
`BA_TABLE_1` is the paper's table; `invariance_table` measures each entry, so a lesson can print
both (`format_invariance_table`) and check that they agree.

The layer is the paper's (section 5.1): pre-activations a = W x of a batch x (N, D), W (H, D), with
no bias before the normalization, then h = gamma * normalized(a) + beta per unit (no nonlinearity:
f would be applied to the same h either way):
    batch norm:  each unit over the batch,        (a_i - mu_i) / sqrt(sigma^2_i + eps)
    weight norm: W = v / ||v|| row by row,        a_i = (v_i . x) / ||v_i||  (v is the weight to change)
    layer norm:  each example over its H units,   (a_i - mu) / sqrt(sigma^2 + eps)
Why no bias before the normalization: with a = W x + b and b kept fixed, W -> c W no longer scales
a, and layer norm's re-scaling invariance fails (the output moves by order 1); batch norm subtracts
any such b exactly, and its entries stay as they are.
"""

from __future__ import annotations

import torch

from .functional import batch_norm
from .norms import WeightNormLinear, layer_norm

__all__ = ["METHODS", "TRANSFORMS", "BA_TABLE_1", "INVARIANT_TOL", "invariance_table", "invariance_verdicts",
           "format_invariance_table"]

METHODS = ("batch norm", "weight norm", "layer norm")
TRANSFORMS = (
    "weight matrix re-scaling",          # W -> c W
    "weight matrix re-centering",        # W -> W + 1 v^T: the same vector v added to every row w_i
    "weight vector re-scaling",          # one row w_i -> c w_i
    "dataset re-scaling",                # every x_n -> c x_n
    "dataset re-centering",              # every x_n -> x_n + v
    "single training case re-scaling",   # one x_n -> c x_n
)
# Table 1 of Ba et al. 2016, row by row in TRANSFORMS' order: True = "Invariant", False = "No"
_PAPER_ROWS = {
    "batch norm": (True, False, True, True, True, False),
    "weight norm": (True, False, True, False, False, False),
    "layer norm": (True, True, False, True, False, True),
}
BA_TABLE_1: dict[tuple[str, str], bool] = {
    (method, transform): invariant
    for method, row in _PAPER_ROWS.items() for transform, invariant in zip(TRANSFORMS, row)
}
# a change below this is rounding (float64 values of order 1 move by ~1e-15), so "invariant"
INVARIANT_TOL = 1e-10


def _layer_output(method: str, weight: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                  eps: float) -> torch.Tensor:
    """h (N, H) of the method's layer for weight W (H, D) (weight norm: v) and batch x (N, D)."""
    if method == "weight norm":
        layer = WeightNormLinear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
        with torch.no_grad():
            layer.weight_v.copy_(weight)
            layer.weight_g.copy_(gamma.view(-1, 1))  # g is weight norm's gamma
            layer.bias.copy_(beta)
        return layer(x).detach()
    a = x @ weight.T
    if method == "batch norm":
        # training mode: the batch's own statistics, no running ones
        return batch_norm(a, None, None, gamma, beta, training=True, eps=eps)
    if method == "layer norm":
        return layer_norm(a, (a.shape[1],), gamma, beta, eps)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def invariance_table(seed: int = 0, eps: float = 0.0, batch_size: int = 16, in_features: int = 10,
                     out_features: int = 8, dtype: torch.dtype = torch.float64) -> dict[tuple[str, str], float]:
    """{(method, transform): max |h' - h|} over the batch's outputs, for every method of METHODS and
    transform of TRANSFORMS: the layer's output h before and h' after the transform.

    One random draw (seeded) serves every entry: x (batch_size, in_features) with a mean away from 0,
    W (out_features, in_features), gamma in [0.5, 1.5] and beta per unit, factors c in [2, 3], shift
    vectors v and the row and example that the single-row and single-example transforms change.

    eps: the normalizations' epsilon. With eps=0 (the default) the invariances are exact: in float64
    the entries the paper calls invariant change by ~1e-15 (< INVARIANT_TOL), the others by order 1.
    With eps > 0 (torch's 1e-5) the re-scaling invariances of BN and LN are approximate: scaling a
    by c turns sqrt(sigma^2 + eps) into sqrt(c^2 sigma^2 + eps), which is not c sqrt(sigma^2 + eps),
    so h moves by about |gamma x_hat| * eps / (2 sigma^2) * (1 - 1/c^2); re-centering invariances
    stay exact (eps does not touch the mean), and weight norm has no eps.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if batch_size < 2 or in_features < 2 or out_features < 2:
        raise ValueError(f"batch_size, in_features and out_features must be >= 2 (statistics over one value "
                         f"are degenerate), got {batch_size}, {in_features}, {out_features}")
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def factor():
        return 2.0 + float(torch.rand((), generator=g, dtype=torch.float64))

    x = randn(batch_size, in_features) + randn(in_features)
    weight = randn(out_features, in_features) / in_features ** 0.5
    gamma = 0.5 + torch.rand(out_features, generator=g, dtype=dtype)
    beta = randn(out_features)
    row = int(torch.randint(out_features, (), generator=g))
    example = int(torch.randint(batch_size, (), generator=g))
    c_matrix, c_row, c_data, c_example = factor(), factor(), factor(), factor()
    weight_shift, data_shift = randn(in_features), randn(in_features)

    def scale_row(w):
        w = w.clone()
        w[row] *= c_row
        return w

    def scale_example(batch):
        batch = batch.clone()
        batch[example] *= c_example
        return batch

    transformed = {
        "weight matrix re-scaling": (c_matrix * weight, x),
        "weight matrix re-centering": (weight + weight_shift, x),   # broadcast: v^T added to every row
        "weight vector re-scaling": (scale_row(weight), x),
        "dataset re-scaling": (weight, c_data * x),
        "dataset re-centering": (weight, x + data_shift),
        "single training case re-scaling": (weight, scale_example(x)),
    }
    changes = {}
    for method in METHODS:
        h = _layer_output(method, weight, x, gamma, beta, eps)
        for transform in TRANSFORMS:
            w2, x2 = transformed[transform]
            changes[(method, transform)] = float((_layer_output(method, w2, x2, gamma, beta, eps) - h).abs().max())
    return changes


def invariance_verdicts(changes: dict[tuple[str, str], float],
                        tol: float = INVARIANT_TOL) -> dict[tuple[str, str], bool]:
    """{(method, transform): change < tol}: the measured table in BA_TABLE_1's form."""
    return {key: change < tol for key, change in changes.items()}


def format_invariance_table(changes: dict[tuple[str, str], float], tol: float = INVARIANT_TOL) -> str:
    """The measured table beside the paper's, one line per transform: for each method the paper's
    word ('invariant' or 'no'), the measured max |h' - h|, and '!' where the two disagree."""
    width = max(len(t) for t in TRANSFORMS)
    lines = [f"{'':{width}}" + "".join(f"{m:>21}" for m in METHODS)]
    for transform in TRANSFORMS:
        cells = []
        for method in METHODS:
            paper, change = BA_TABLE_1[(method, transform)], changes[(method, transform)]
            mark = " " if (change < tol) == paper else "!"
            cells.append(f"{'invariant' if paper else 'no':>11} {change:8.1e}{mark}")
        lines.append(f"{transform:{width}}" + "".join(cells))
    return "\n".join(lines)
