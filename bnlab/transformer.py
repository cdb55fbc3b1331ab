"""Normalization in a tiny transformer (lesson 11): LayerNorm and RMSNorm normalize each token over
its features, BN normalizes each feature over the tokens of the batch. `TokenNorm` applies either to
(N, T, D) token features with a padding mask; `TinyTransformer` is a one- or two-block transformer
built from it.

Around them: what padding does to BN's statistics (`padding_effect`), a variable-length adding
problem (`padded_adding_problem`), a seeded training loop (`train_transformer`), evaluation under
different batch compositions (`batch_composition`), and how far BN's batch statistics stray from its
running ones during training, in the transformer and in a small CNN (`Fluctuation`, Shen et al. 2020).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import _seed_pair, digits
from .layers import BatchNorm1d, is_batchnorm
from .models import conv_net
from .norms import LayerNorm, RMSNorm, rms_eps
from .recurrent import SequenceHistory, _seeded, _untouched
from .train import make_optimizer, train_classifier

__all__ = ["TOKEN_NORMS", "NORMS", "TokenNorm", "SelfAttention", "TransformerBlock", "TinyTransformer",
           "lengths_to_mask", "random_token_batch", "PaddingEffect", "padding_effect", "padding_effects",
           "padded_adding_problem", "TransformerHistory", "train_transformer", "evaluate_transformer",
           "batch_composition", "Fluctuation", "cnn_fluctuation"]

TOKEN_NORMS = ("ln", "rms", "bn", "bn_masked")
NORMS = (None,) + TOKEN_NORMS
BATCH_NORMS = ("bn", "bn_masked")
POSITIONS = ("learned", "sinusoidal", None)
READOUTS = ("mean", "first", "tokens")


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _check_norm(norm, allowed=NORMS) -> None:
    if norm not in allowed:
        raise ValueError(f"norm must be one of {allowed}, got {norm!r}")


def _check_tokens(x, mask, what: str, features: int | None = None) -> torch.Tensor | None:
    """Check x (N, T, D) float and mask (N, T) bool or None; returns the mask."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} expects floating-point token features (N, T, D), got {shape}")
    if features is not None and x.shape[2] != features:
        raise ValueError(f"{what} expects D = {features} features on the last dim, got shape {tuple(x.shape)}")
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (N, T), True for real tokens; got "
                         f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected (N, T) = {tuple(x.shape[:2])} "
                         f"for tokens of shape {tuple(x.shape)}")
    return mask


def lengths_to_mask(lengths, max_len: int | None = None) -> torch.Tensor:
    """Padding mask (N, T) bool from sequence lengths (N,): mask[i, t] = t < lengths[i] (True = a
    real token, padding at the end). T = max_len, or the longest length."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be (N,) integers, got {tuple(lengths.shape)} {lengths.dtype}")
    if len(lengths) and int(lengths.min()) < 1:
        raise ValueError(f"every sequence needs at least one token, got a length {int(lengths.min())}")
    T = int(lengths.max()) if max_len is None else max_len
    if len(lengths) and int(lengths.max()) > T:
        raise ValueError(f"a length {int(lengths.max())} exceeds max_len={T}")
    return torch.arange(T, device=lengths.device) < lengths[:, None]


# ============================================================================= the norms
class TokenNorm(nn.Module):
    """A normalization of token features x (N, T, D) with an optional padding mask (N, T), True
    for real tokens. Which values share one mean and variance:

      'ln'         each token over its D features (Ba et al. 2016):
                     mu = mean_d x_ntd,  sigma^2 = mean_d (x_ntd - mu)^2,
                     y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta
      'rms'        each token over its D features, without centring (Zhang & Sennrich 2019):
                     y = gamma * x / sqrt(mean_d x_ntd^2 + eps)
      'bn'         each feature d over all N*T positions, padding counted, as flattening the
                   tokens to (N*T, D) for BatchNorm1d does:
                     mu_B = mean_nt x_ntd,  sigma^2_B = mean_nt (x_ntd - mu_B)^2
      'bn_masked'  each feature d over the real tokens only (M = mask.sum() positions); padded
                   positions' outputs are 0 (they are masked everywhere downstream)

    For both BNs: y = gamma * (x - mu_B) / sqrt(sigma^2_B + eps) + beta in training, with the
    running statistics updated as torch's (unbiased sigma^2_B * m / (m - 1) in running_var); eval
    uses running_mean and running_var. 'ln' and 'rms' ignore the mask: each token is on its own.

    The normalization is `norm`, a bnlab `LayerNorm(D)`, `RMSNorm(D)` or `BatchNorm1d(D)`, whose
    state_dict loads into torch's module of the same name. eps=None: each one's torch default (1e-5,
    RMSNorm `rms_eps`); momentum is BN's. Returns (N, T, D).
    """

    def __init__(self, norm: str, num_features: int, eps: float | None = None, momentum: float | None = 0.1,
                 affine: bool = True, device=None, dtype=None):
        super().__init__()
        _check_norm(norm, TOKEN_NORMS)
        if not _is_int(num_features, 1):
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        factory = {"device": device, "dtype": dtype}
        self.kind = norm
        self.num_features = num_features
        if norm == "ln":
            self.norm = LayerNorm(num_features, eps=1e-5 if eps is None else eps, elementwise_affine=affine,
                                  **factory)
        elif norm == "rms":
            self.norm = RMSNorm(num_features, eps=eps, elementwise_affine=affine, **factory)
        else:
            self.norm = BatchNorm1d(num_features, eps=1e-5 if eps is None else eps, momentum=momentum,
                                    affine=affine, **factory)

    @property
    def masked(self) -> bool:
        """Whether padded positions are left out of the statistics (always, for 'ln' and 'rms')."""
        return self.kind != "bn"

    @property
    def eps(self) -> float:
        eps = self.norm.eps
        return rms_eps(self.norm.weight.dtype if self.norm.weight is not None else torch.float32) \
            if eps is None else eps

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_tokens(x, mask, f"TokenNorm({self.kind!r}, {self.num_features})", self.num_features)
        if self.kind in ("ln", "rms"):
            return self.norm(x)
        N, T, D = x.shape
        if self.kind == "bn" or mask is None:
            return self.norm(x.reshape(N * T, D)).reshape(N, T, D)
        if self.training and int(mask.sum()) < 2:
            raise ValueError(f"TokenNorm('bn_masked') in training needs at least 2 real tokens for BN's "
                             f"batch variance, got {int(mask.sum())}")
        out = x.new_zeros(N, T, D)
        out[mask] = self.norm(x[mask])
        return out

    def batch_statistics(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """(mu_B, sigma^2_B (biased), m) that the BN kinds normalize with in training: over all N*T
        positions ('bn', or no mask) or over the M real tokens ('bn_masked'); each (D,), m an int.
        None for 'ln' and 'rms', which have no batch statistics."""
        mask = _check_tokens(x, mask, f"TokenNorm({self.kind!r}).batch_statistics", self.num_features)
        if self.kind not in BATCH_NORMS:
            return None
        with torch.no_grad():
            rows = x[mask] if (self.kind == "bn_masked" and mask is not None) else x.reshape(-1, x.shape[2])
            rows = rows.double()
            return rows.mean(0), rows.var(0, unbiased=False), len(rows)

    def extra_repr(self) -> str:
        return f"{self.kind!r}, {self.num_features}"


def _norm_or_none(norm, d_model, eps, momentum, factory):
    return None if norm is None else TokenNorm(norm, d_model, eps=eps, momentum=momentum, **factory)


def _apply(norm, x, mask):
    return x if norm is None else norm(x, mask)


# ============================================================================= padding
def random_token_batch(n: int = 16, max_len: int = 12, features: int = 8, min_len: int = 3, seed: int = 0,
                       dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Token features with a mean in [-2, 2] and a scale in [0.3, 3] per feature, as a network's
    features have, and random lengths in min_len..max_len padded with zeros. Returns x (n, max_len,
    features) and mask (n, max_len) bool (the longest sequence has max_len tokens)."""
    g = torch.Generator().manual_seed(seed)
    mean = (torch.rand(features, generator=g, dtype=torch.float64) * 4 - 2)
    scale = 0.3 * 10.0 ** torch.rand(features, generator=g, dtype=torch.float64)
    x = torch.randn(n, max_len, features, generator=g, dtype=torch.float64) * scale + mean
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    lengths[0] = max_len
    mask = lengths_to_mask(lengths, max_len)
    return (x * mask[..., None]).to(dtype), mask


@dataclass
class PaddingEffect:
    """What k more padded positions per sequence (zeros, masked) do to a `TokenNorm` in training
    (see `padding_effect`):

      output_change  max over real tokens of |y(padded more) - y|: 0 (to rounding) where padding
                     has no effect
      mean_shift     mean_d |mu_B' - mu_B| / sqrt(sigma^2_B + eps): how far the batch mean moved,
                     in batch standard deviations (0 for ln and rms, which have no batch mean)
      var_ratio      mean_d (sigma^2_B' + eps) / (sigma^2_B + eps): 1 where unchanged
      count, count_padded  the positions in BN's statistics before and after (nan for ln, rms)
    """

    norm: str
    extra_padding: int
    output_change: float
    mean_shift: float
    var_ratio: float
    count: float
    count_padded: float

    def __str__(self) -> str:
        text = (f"{self.norm:>9}: {self.extra_padding} more padded positions per sequence change the real "
                f"tokens' outputs by up to {self.output_change:.2g}")
        if not math.isnan(self.count):
            text += (f"; BN's statistics over {self.count:.0f} -> {self.count_padded:.0f} positions: mean moves "
                     f"{self.mean_shift:.2g} sd, variance x{self.var_ratio:.3g}")
        return text


def padding_effect(norm, x: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                   extra_padding: int = 8, seed: int = 0) -> PaddingEffect:
    """Pad every sequence of x (N, T, D) by extra_padding more zero positions (mask False there)
    and compare the norm's training-mode outputs on the real tokens, and its batch statistics.

    norm: a `TokenNorm` or one of TOKEN_NORMS (then a fresh TokenNorm in x's dtype). x, mask:
    default `random_token_batch(seed=seed)` (float64). Both passes use batch statistics, without
    gradients; running statistics and the mode are left as they were.
    """
    if x is None:
        x, mask = random_token_batch(seed=seed)
    if isinstance(norm, str):
        _check_norm(norm, TOKEN_NORMS)
        norm = TokenNorm(norm, x.shape[2], dtype=x.dtype, device=x.device)
    if not isinstance(norm, TokenNorm):
        raise ValueError(f"norm must be a TokenNorm or one of {TOKEN_NORMS}, got {type(norm).__name__}")
    mask = _check_tokens(x, mask, "padding_effect", norm.num_features)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if not _is_int(extra_padding, 1):
        raise ValueError(f"extra_padding must be an int >= 1, got {extra_padding!r}")
    N, T, D = x.shape
    x_more = torch.cat([x, x.new_zeros(N, extra_padding, D)], dim=1)
    mask_more = torch.cat([mask, mask.new_zeros(N, extra_padding)], dim=1)
    with _untouched(norm):
        norm.train()
        y, y_more = norm(x, mask), norm(x_more, mask_more)
        before, after = norm.batch_statistics(x, mask), norm.batch_statistics(x_more, mask_more)
    change = float((y_more[:, :T] - y)[mask].abs().max())
    if before is None:
        return PaddingEffect(norm.kind, extra_padding, change, 0.0, 1.0, math.nan, math.nan)
    (mu, var, m), (mu_more, var_more, m_more) = before, after
    eps = norm.eps
    shift = float(((mu_more - mu).abs() / (var + eps).sqrt()).mean())
    ratio = float(((var_more + eps) / (var + eps)).mean())
    return PaddingEffect(norm.kind, extra_padding, change, shift, ratio, float(m), float(m_more))


def padding_effects(extra_padding: int = 8, seed: int = 0, norms=TOKEN_NORMS) -> dict[str, PaddingEffect]:
    """`padding_effect` of a fresh TokenNorm of each kind on the same `random_token_batch(seed=seed)`."""
    x, mask = random_token_batch(seed=seed)
    return {norm: padding_effect(norm, x, mask, extra_padding) for norm in norms}


# ============================================================================= the transformer
class SelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask. For each head h (d_head = D / heads):

        Q, K, V = x W_q, x W_k, x W_v,   A = softmax(Q K^T / sqrt(d_head) + M),   head_h = A V
        out = [head_1 ... head_heads] W_o

    M is 0 for real keys and -inf for padded ones, so a padded token never reaches a real one
    (torch's ``scaled_dot_product_attention``). x (N, T, D), mask (N, T) bool or None -> (N, T, D).
    """

    def __init__(self, d_model: int, heads: int, device=None, dtype=None):
        super().__init__()
        if not (_is_int(d_model, 1) and _is_int(heads, 1)) or d_model % heads:
            raise ValueError(f"d_model ({d_model!r}) must be a positive multiple of heads ({heads!r})")
        self.d_model, self.heads = d_model, heads
        self.qkv = nn.Linear(d_model, 3 * d_model, device=device, dtype=dtype)
        self.out = nn.Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        N, T, D = x.shape
        q, k, v = self.qkv(x).view(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(heads.transpose(1, 2).reshape(N, T, D))


class TransformerBlock(nn.Module):
    """One transformer block with norm n (a `TokenNorm`, or the identity for norm=None):

        pre_norm=True  (GPT-2, ViT):         h = h + Attn(n1(h));   h = h + MLP(n2(h))
        pre_norm=False (Vaswani et al. 2017): h = n1(h + Attn(h));  h = n2(h + MLP(h))

    MLP(h) = W_2 ReLU(W_1 h), hidden width mlp_ratio * D. h (N, T, D), mask (N, T) -> (N, T, D).
    """

    def __init__(self, d_model: int, heads: int, norm: str | None = "ln", pre_norm: bool = True,
                 mlp_ratio: int = 2, eps: float | None = None, momentum: float | None = 0.1, device=None,
                 dtype=None):
        super().__init__()
        _check_norm(norm)
        factory = {"device": device, "dtype": dtype}
        self.pre_norm = pre_norm
        self.norm1 = _norm_or_none(norm, d_model, eps, momentum, factory)
        self.attn = SelfAttention(d_model, heads, **factory)
        self.norm2 = _norm_or_none(norm, d_model, eps, momentum, factory)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model, **factory), nn.ReLU(),
                                 nn.Linear(mlp_ratio * d_model, d_model, **factory))

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            h = h + self.attn(_apply(self.norm1, h, mask), mask)
            return h + self.mlp(_apply(self.norm2, h, mask))
        h = _apply(self.norm1, h + self.attn(h, mask), mask)
        return _apply(self.norm2, h + self.mlp(h), mask)


def sinusoidal_positions(max_len: int, d_model: int, dtype=None, device=None) -> torch.Tensor:
    """Vaswani et al.'s position codes (max_len, d_model): PE[t, 2i] = sin(t / 10000^(2i/D)),
    PE[t, 2i+1] = cos(t / 10000^(2i/D))."""
    t = torch.arange(max_len, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)[:, :d_model // 2]
    return pe.to(dtype=dtype or torch.get_default_dtype(), device=device)


class TinyTransformer(nn.Module):
    """A small transformer encoder for sequences (N, T, input_size) of real values, or tokens (N, T)
    of a vocabulary of vocab_size:

        h_0 = E(x) + P                 E: Linear(input_size, D) or Embedding(vocab_size, D);
                                       P: learned or sinusoidal positions, or none
        h_l = Block_l(h_{l-1}, mask)   `TransformerBlock`, l = 1..layers, the same norm in each
        h   = n_f(h_layers)            a final norm with pre_norm (none with post-norm)
        out = W r(h) + b               r: mean over real tokens ('mean'), the first token
                                       ('first'), or every token ('tokens')

    forward(x, mask=None, lengths=None): mask (N, T) bool (True = real token), or lengths (N,);
    padding at any position, every sequence with a real token. Returns (N, num_outputs), or
    (N, T, num_outputs) with readout='tokens'. With norm 'ln', 'rms' or 'bn_masked' a padded
    token never changes a real token's output; with 'bn' (padding in BN's statistics) it does.
    """

    def __init__(self, input_size: int | None = None, d_model: int = 32, heads: int = 2, layers: int = 1,
                 norm: str | None = "ln", pre_norm: bool = True, max_len: int = 64, num_outputs: int = 1,
                 vocab_size: int | None = None, positions: str | None = "learned", readout: str = "mean",
                 mlp_ratio: int = 2, eps: float | None = None, momentum: float | None = 0.1, device=None,
                 dtype=None):
        super().__init__()
        _check_norm(norm)
        if (input_size is None) == (vocab_size is None):
            raise ValueError("give exactly one of input_size (real-valued inputs (N, T, input_size)) and "
                             f"vocab_size (tokens (N, T)); got input_size={input_size!r}, vocab_size={vocab_size!r}")
        for name, value in (("d_model", d_model), ("heads", heads), ("layers", layers), ("max_len", max_len),
                            ("num_outputs", num_outputs), ("mlp_ratio", mlp_ratio),
                            ("input_size", input_size if input_size is not None else vocab_size)):
            if not _is_int(value, 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.vocab_size, self.d_model = input_size, vocab_size, d_model
        self.norm, self.pre_norm, self.max_len = norm, pre_norm, max_len
        self.positions, self.readout = positions, readout
        self.embed = (nn.Embedding(vocab_size, d_model, **factory) if vocab_size is not None
                      else nn.Linear(input_size, d_model, **factory))
        if positions == "learned":
            self.position = nn.Parameter(torch.randn(max_len, d_model, **factory) * 0.1)
        elif positions == "sinusoidal":
            self.register_buffer("position", sinusoidal_positions(max_len, d_model, **factory), persistent=False)
        else:
            self.position = None
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, norm, pre_norm, mlp_ratio, eps, momentum,
                                                     **factory) for _ in range(layers))
        self.final_norm = _norm_or_none(norm, d_model, eps, momentum, factory) if pre_norm else None
        self.head = nn.Linear(d_model, num_outputs, **factory)

    def _mask(self, x, mask, lengths) -> torch.Tensor | None:
        if mask is not None and lengths is not None:
            raise ValueError("give mask or lengths, not both")
        N, T = x.shape[:2]
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if tuple(lengths.shape) != (N,):
                raise ValueError(f"lengths must be (N,) = ({N},), got shape {tuple(lengths.shape)}")
            mask = lengths_to_mask(lengths, T)
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (N, T):
            raise ValueError(f"mask must be a bool tensor (N, T) = ({N}, {T}), True for real tokens; got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        if not bool(mask.any(1).all()):
            raise ValueError("every sequence needs at least one real token (a row of the mask is all False)")
        return mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, lengths=None) -> torch.Tensor:
        name = type(self).__name__
        if self.vocab_size is not None:
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point():
                raise ValueError(f"{name} with vocab_size expects integer tokens (N, T), got "
                                 f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        elif not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"{name} expects inputs (N, T, {self.input_size}), got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequences of {T} positions are longer than max_len={self.max_len}")
        mask = self._mask(x, mask, lengths)
        h = self.embed(x)
        if self.position is not None:
            h = h + self.position[:T]
        for block in self.blocks:
            h = block(h, mask)
        h = _apply(self.final_norm, h, mask)
        if self.readout == "tokens":
            return self.head(h)
        if self.readout == "first":
            return self.head(h[:, 0])
        if mask is None:
            return self.head(h.mean(1))
        weights = mask.to(h.dtype)[..., None]
        # padded positions hold finite values (a padded query attends to the real keys), zeroed here
        return self.head((h * weights).sum(1) / weights.sum(1))

    def token_norms(self) -> dict[str, TokenNorm]:
        """The model's TokenNorms by name, in forward order ({} for norm=None)."""
        return {name: m for name, m in self.named_modules() if isinstance(m, TokenNorm)}

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}, pre_norm={self.pre_norm}, positions={self.positions!r}, readout={self.readout!r}"


# ============================================================================= the task
def padded_adding_problem(n: int, min_length: int = 5, max_length: int = 30, seed: int = 0,
                          split: str = "train") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`bnlab.data.adding_problem` with a length L_i per sequence, uniform in min_length..max_length,
    padded with zeros to max_length:

        x[i, t, 0] = u_t ~ U(0, 1), x[i, t, 1] = 1 at two steps (one with t < L_i // 2, one after)
        y_i = sum of u_t over the two marked steps;  x[i, t] = 0 for t >= L_i (padding)

    The sum does not depend on the order, but each token must find the two marked ones among
    L_i: attention's job. Answering 1 scores an MSE of 1/6. split: independent streams of seed.
    Returns x (n, max_length, 2) float32, lengths (n,) int64, y (n,) float32.
    """
    if not _is_int(n, 1):
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if not (_is_int(min_length, 2) and _is_int(max_length, 2)) or min_length > max_length:
        raise ValueError(f"need 2 <= min_length <= max_length (two marked steps), got {min_length!r}, "
                         f"{max_length!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = _seed_pair(seed)[0 if split == "train" else 1]
    lengths = rng.integers(min_length, max_length + 1, n)
    values = rng.random((n, max_length))
    half = lengths // 2
    first = (rng.random(n) * half).astype(np.int64)
    second = half + (rng.random(n) * (lengths - half)).astype(np.int64)
    rows = np.arange(n)
    markers = np.zeros((n, max_length))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    real = np.arange(max_length) < lengths[:, None]
    x = (np.stack([values, markers], axis=-1) * real[..., None]).astype(np.float32)
    # summed from the float32 values the net sees, so the target is exactly reachable
    y = x[rows, first, 0] + x[rows, second, 0]
    return torch.from_numpy(x), torch.from_numpy(lengths.astype(np.int64)), torch.from_numpy(y)


# ============================================================================= fluctuation
@dataclass
class Fluctuation:
    """How far BN's batch statistics stray from its running statistics during training (Shen et
    al. 2020, Fig. 2), per BN layer, at every training step s (before that step's update):

        mean[layer][s] = mean_d |mu_B,d - running_mean_d| / sqrt(running_var_d + eps)
        var[layer][s]  = mean_d |sigma^2_B,d / (running_var_d + eps) - 1|

    count[layer][s]: m, the values per statistic (N*T tokens, or N*H*W pixels). A batch of m
    i.i.d. Gaussian values would give about sqrt(2 / (pi m)) and 2 / sqrt(pi m) (`iid_mean`,
    `iid_var`): sampling noise alone. Arrays of float64, one entry per step.
    """

    mean: dict[str, np.ndarray] = field(default_factory=dict)
    var: dict[str, np.ndarray] = field(default_factory=dict)
    count: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return list(self.mean)

    @property
    def steps(self) -> np.ndarray:
        """The training steps recorded, 1, 2, ...: the x-axis of a plot."""
        return np.arange(1, len(next(iter(self.mean.values()), [])) + 1)

    def curve(self, which: str = "mean", relative: bool = False) -> np.ndarray:
        """One value per step, averaged over the layers: which='mean' or 'var'; relative=True
        divides each layer's value by its i.i.d. one first."""
        if which not in ("mean", "var"):
            raise ValueError(f"which must be 'mean' or 'var', got {which!r}")
        if not self.mean:
            raise ValueError("no BN layer was recorded")
        values = self.mean if which == "mean" else self.var
        iid = self.iid_mean if which == "mean" else self.iid_var
        return np.mean([values[name] / iid(name) if relative else values[name] for name in self.layers], axis=0)

    def iid_mean(self, layer: str) -> np.ndarray:
        return np.sqrt(2.0 / (np.pi * self.count[layer]))

    def iid_var(self, layer: str) -> np.ndarray:
        return 2.0 / np.sqrt(np.pi * self.count[layer])

    def average(self, skip: int = 50) -> dict[str, float]:
        """Over all layers and the steps after the first skip (the running averages start at 0
        and 1 and need about 1 / momentum steps to catch up): 'mean', 'var' and, divided by the
        i.i.d. values, 'mean_vs_iid', 'var_vs_iid'."""
        if not self.mean:
            raise ValueError("no BN layer was recorded")
        layers = self.layers
        if min(len(self.mean[name]) for name in layers) <= skip:
            raise ValueError(f"skip={skip} leaves no step of {min(len(self.mean[n]) for n in layers)}")
        pick = {key: np.concatenate([values[name][skip:] for name in layers])
                for key, values in (("mean", self.mean), ("var", self.var))}
        iid_m = np.concatenate([self.iid_mean(name)[skip:] for name in layers])
        iid_v = np.concatenate([self.iid_var(name)[skip:] for name in layers])
        return {"mean": float(pick["mean"].mean()), "var": float(pick["var"].mean()),
                "mean_vs_iid": float((pick["mean"] / iid_m).mean()), "var_vs_iid": float((pick["var"] / iid_v).mean())}


class _FluctuationRecorder:
    """Forward pre-hooks on BN layers that record, in training only, the batch statistics of their
    input against the running statistics as they are before the layer updates them."""

    def __init__(self, layers: dict[str, nn.Module], statistics):
        self.result = Fluctuation()
        self._rows = {name: ([], [], []) for name in layers}
        self._handles = [module.register_forward_pre_hook(self._hook(name, statistics))
                         for name, module in layers.items()]

    def _hook(self, name, statistics):
        def hook(mod, args):
            if not mod.training:
                return
            stats = statistics(mod, args)
            if stats is None:
                return
            mu, var, m = stats
            bn = mod.norm if isinstance(mod, TokenNorm) else mod
            running_mean, running_var = bn.running_mean.double(), bn.running_var.double() + bn.eps
            means, variances, counts = self._rows[name]
            means.append(float(((mu - running_mean).abs() / running_var.sqrt()).mean()))
            variances.append(float((var / running_var - 1).abs().mean()))
            counts.append(m)
        return hook

    def close(self) -> Fluctuation:
        for handle in self._handles:
            handle.remove()
        for name, (means, variances, counts) in self._rows.items():
            self.result.mean[name] = np.array(means)
            self.result.var[name] = np.array(variances)
            self.result.count[name] = np.array(counts, dtype=np.float64)
        return self.result


def _token_statistics(module: TokenNorm, args):
    x = args[0]
    mask = args[1] if len(args) > 1 else None
    return module.batch_statistics(x, mask)


def _channel_statistics(module: nn.Module, args):
    x = args[0].detach().double()
    dims = [0] + list(range(2, x.dim()))
    return x.mean(dims), x.var(dims, unbiased=False), x.numel() // x.shape[1]


def cnn_fluctuation(steps: int = 300, seed: int = 0, batch_size: int = 32, lr: float = 0.1,
                    widths=(16, 32)) -> tuple[Fluctuation, object]:
    """`Fluctuation` of the BN layers of `bnlab.models.conv_net` (conv-BN-ReLU blocks of widths, on
    the 8x8 digits images, lesson 06's CNN) trained with plain SGD at lr on the CPU. Each
    statistic is over m = batch_size * 64 pixels (2048 at batch 32); batch_size=9 gives m = 576,
    about the real tokens of a batch of 32 `padded_adding_problem` sequences (lengths 5..30), for
    a comparison at the same m. Returns (Fluctuation, the `bnlab.train.History` of the run)."""
    data = digits(images=True)
    torch.manual_seed(seed)
    model = conv_net(1, 10, tuple(widths), norm="bn")
    layers = {name: m for name, m in model.named_modules() if is_batchnorm(m)}
    recorder = _FluctuationRecorder(layers, _channel_statistics)
    try:
        history = train_classifier(model, data, steps=steps, batch_size=batch_size, lr=lr, eval_every=steps,
                                   seed=seed, device="cpu", progress=False)
    finally:
        fluctuation = recorder.close()
    return fluctuation, history


# ============================================================================= training
@dataclass
class TransformerHistory(SequenceHistory):
    """A `SequenceHistory` (loss per step, metrics['test'] = test MSE in eval mode at eval_steps,
    seconds, ms_per_step) with the `Fluctuation` of the model's BN layers during training
    (empty without BN, None when not recorded)."""

    fluctuation: Fluctuation | None = None


def _batches(lengths: torch.Tensor, batch_size: int, order: str, seed: int) -> list[torch.Tensor]:
    n = len(lengths)
    if order == "random":
        index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    elif order == "sorted":
        index = torch.argsort(lengths, stable=True)
    elif order == "given":
        index = torch.arange(n)
    else:
        raise ValueError(f"order must be 'random', 'sorted' or 'given', got {order!r}")
    return list(index.split(batch_size))


def evaluate_transformer(model: TinyTransformer, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
                         batch_size: int = 64, order: str = "random", statistics: str = "running",
                         seed: int = 0) -> float:
    """The mean squared error of a regression model on (x (N, T, F), lengths (N,), y (N,)), in
    batches of batch_size, each padded to its longest sequence. order: 'random' (shuffled by seed),
    'sorted' by length (little padding in a batch) or 'given'. statistics: 'running' (eval mode:
    BN uses its running statistics, so the batches do not matter) or 'batch' (training mode: BN
    normalizes each batch with its own statistics, which depend on what else is in it; the
    running statistics are left as they were). LN and RMSNorm give the same either way."""
    if statistics not in ("running", "batch"):
        raise ValueError(f"statistics must be 'running' or 'batch', got {statistics!r}")
    if not _is_int(batch_size, 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    total = 0.0
    with _untouched(model):
        model.train(statistics == "batch")
        for idx in _batches(lengths, batch_size, order, seed):
            T = int(lengths[idx].max())
            out = model(x[idx, :T], lengths=lengths[idx]).squeeze(-1)
            total += float(((out.double() - y[idx].double()) ** 2).sum())
    return total / len(x)


def batch_composition(model: TinyTransformer, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 64, seed: int = 0) -> dict[tuple[str, str], float]:
    """Test MSE of the same sequences under different batch compositions: {(statistics, batches):
    mse} for statistics 'running' (eval mode) and 'batch' (BN with each batch's own statistics,
    see `evaluate_transformer`) and batches 'random', 'sorted' (by length, so each batch holds
    little padding) and 'batch 1' (each sequence alone, unpadded). With running statistics the
    three agree for every norm; with batch statistics only for the batch-independent ones (ln,
    rms, None)."""
    table = {}
    for statistics in ("running", "batch"):
        for order in ("random", "sorted"):
            table[statistics, order] = evaluate_transformer(model, x, lengths, y, batch_size, order, statistics,
                                                            seed)
        table[statistics, "batch 1"] = evaluate_transformer(model, x, lengths, y, 1, "given", statistics)
    return table


def train_transformer(norm: str | None = "ln", steps: int = 300, seed: int = 0, batch_size: int = 32,
                      lr: float = 3e-3, d_model: int = 32, heads: int = 2, layers: int = 1, pre_norm: bool = True,
                      min_length: int = 5, max_length: int = 30, n_train: int = 5000, n_test: int = 500,
                      eval_every: int = 50, max_grad_norm: float | None = 1.0, record_statistics: bool = True,
                      progress: bool = False, **model_kwargs) -> TransformerHistory:
    """A `TinyTransformer` with the given norm trained on `padded_adding_problem` (lengths
    min_length..max_length): Adam at lr, minibatches of batch_size drawn with replacement (seeded)
    and padded to their longest sequence, mean squared error, gradients clipped to max_grad_norm.
    seed: the weights, the data and the batches. metrics['test']: test MSE in eval mode at step 0,
    every eval_every steps and at the end (1/6 for always answering 1). With record_statistics,
    fluctuation holds the BN layers' `Fluctuation` (ms_per_step includes its small cost).
    model_kwargs go to TinyTransformer (positions=..., readout=..., mlp_ratio=...).
    """
    _check_norm(norm)
    if not (_is_int(steps, 1) and _is_int(batch_size, 2) and _is_int(eval_every, 1)):
        raise ValueError(f"need steps >= 1, batch_size >= 2 and eval_every >= 1, got {steps!r}, {batch_size!r}, "
                         f"{eval_every!r}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    x, lengths, y = padded_adding_problem(n_train, min_length, max_length, seed, "train")
    x_test, lengths_test, y_test = padded_adding_problem(n_test, min_length, max_length, seed, "test")
    model_kwargs.setdefault("max_len", max_length)
    model = _seeded(seed, lambda: TinyTransformer(2, d_model, heads, layers, norm, pre_norm, **model_kwargs))
    history = TransformerHistory(metric="mse", model=model)
    opt = make_optimizer("adam", model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    norms = {name: m for name, m in model.token_norms().items() if m.kind in BATCH_NORMS}
    recorder = _FluctuationRecorder(norms, _token_statistics) if record_statistics else None

    def record(step):
        history.eval_steps.append(step)
        history.metrics.setdefault("test", []).append(
            evaluate_transformer(model, x_test, lengths_test, y_test, order="given"))

    model.train()
    record(0)
    try:
        for step in tqdm(range(1, steps + 1), disable=not progress, desc="training", leave=False):
            start = time.perf_counter()
            idx = torch.randint(len(x), (batch_size,), generator=gen)
            T = int(lengths[idx].max())
            out = model(x[idx, :T], lengths=lengths[idx]).squeeze(-1)
            loss = F.mse_loss(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            opt.step()
            history.seconds += time.perf_counter() - start
            history.loss.append(loss.item())
            if not math.isfinite(history.loss[-1]):
                history.diverged_at = step
                break
            if step % eval_every == 0 or step == steps:
                record(step)
    finally:
        if recorder is not None:
            history.fluctuation = recorder.close()
    return history
