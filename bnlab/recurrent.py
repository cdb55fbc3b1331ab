"""Normalized LSTMs for lesson 11: an LSTM written as an explicit loop over time that equals
``torch.nn.LSTM`` without normalization, and with norm='bn' (Cooijmans et al. 2016, per-step
statistics), 'bn_input' (Laurent et al. 2016, the input path only) or 'ln' (Ba et al. 2016).

Around it: classifier and regressor heads, masking of padded batches, the measurements the lesson
shows (how the pre-activations' variance changes over time, what padding does to BN's
statistics) and a small seeded training loop for digit sequences and the adding problem.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .data import adding_problem, digit_sequences
from .layers import BatchNorm1d
from .norms import LayerNorm
from .train import make_optimizer

__all__ = ["LSTM", "LSTMCell", "SequenceBatchNorm", "SequenceClassifier", "SequenceRegressor",
           "lstm_cell_update", "NORMS", "BEYOND", "DEFAULT_GAMMA",
           "hidden_preactivation_variance", "padding_effect", "PaddingEffect",
           "SequenceHistory", "train_sequence_model", "train_digit_sequences", "train_adding_problem"]

NORMS = (None, "bn", "bn_input", "ln")
BEYOND = ("last", "none")
# gamma's initial value per norm, as each paper has it: Cooijmans et al. found gamma = 1 saturates
# the gates and kills the gradient through time, 0.1 does not; Laurent et al. and Ba et al. use 1
DEFAULT_GAMMA = {"bn": 0.1, "bn_input": 1.0, "ln": 1.0}


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


# ============================================================================= per-step BN
class SequenceBatchNorm(nn.Module):
    """Batch normalization with its own statistics at every time step and one gamma, beta shared
    by all steps (Cooijmans et al. 2016). At step t, over the batch B of (N, C) inputs x_t:

        training:  mu_B,t = mean_B x_t,   sigma^2_B,t = mean_B (x_t - mu_B,t)^2
                   (steps[t]'s running_mean and running_var are updated as BN's)
        eval:      mu_B,t, sigma^2_B,t = steps[t].running_mean, steps[t].running_var
        x_hat_t = (x_t - mu_B,t) / sqrt(sigma^2_B,t + eps),   y_t = gamma * x_hat_t + beta

    steps is a ModuleList of max_steps `bnlab.BatchNorm1d(num_features, affine=False)`, each with
    torch's buffers (running_mean, running_var, num_batches_tracked): step t's state_dict loads
    into torch.nn.BatchNorm1d(num_features, affine=False). gamma and beta are weight and bias
    here; bias=False keeps gamma only (the LSTM's own bias carries the shift).

    Steps t >= max_steps: beyond='last' uses steps[max_steps - 1] for all of them, the paper's
    choice for sequences longer than the training ones (the distributions settle after a few
    steps). In eval that means its running statistics; in training the step is normalized with
    its own batch statistics, as every training step is, and they are averaged into
    steps[max_steps - 1]'s running statistics, which then mix all steps from max_steps - 1 on.
    beyond='none': a step t >= max_steps raises a ValueError, in training and in eval.
    beyond is a plain attribute and may be changed after training.
    """

    def __init__(self, num_features: int, max_steps: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, bias: bool = True, beyond: str = "last", device=None, dtype=None):
        super().__init__()
        if not _is_int(max_steps, 1):
            raise ValueError(f"max_steps must be an int >= 1 (the longest training sequence), got {max_steps!r}")
        _check_beyond(beyond)
        factory = {"device": device, "dtype": dtype}
        self.steps = nn.ModuleList(BatchNorm1d(num_features, eps=eps, momentum=momentum, affine=False, **factory)
                                   for _ in range(max_steps))
        self.num_features = num_features
        self.max_steps = max_steps
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.beyond = beyond
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.bias = None
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        for step in self.steps:
            step.reset_running_stats()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def step_norm(self, t: int) -> BatchNorm1d:
        """The BN whose statistics step t uses (see beyond)."""
        if not _is_int(t, 0):
            raise ValueError(f"t must be a time step, an int >= 0, got {t!r}")
        if t < self.max_steps:
            return self.steps[t]
        _check_beyond(self.beyond)
        if self.beyond == "none":
            raise ValueError(f"step {t} is beyond max_steps={self.max_steps} and beyond='none'; use "
                             "beyond='last' (the last step's statistics) or a larger max_steps")
        return self.steps[-1]

    def forward(self, input: torch.Tensor, t: int) -> torch.Tensor:
        """input: (N, C) at time step t. Returns (N, C)."""
        out = self.step_norm(t)(input)
        if self.weight is not None:
            out = out * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, max_steps={self.max_steps}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, beyond={self.beyond!r}")


def _check_beyond(beyond) -> None:
    if beyond not in BEYOND:
        raise ValueError(f"beyond must be one of {BEYOND}, got {beyond!r}")


# ============================================================================= the LSTM
def lstm_cell_update(gates: torch.Tensor, c: torch.Tensor, cell_norm=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM update from the gates' pre-activations, in torch's gate order (input, forget, cell, output):

        a = [a_i, a_f, a_g, a_o]   (N, 4H)
        c' = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)
        h' = sigmoid(a_o) * tanh(n(c'))

    n is cell_norm (a function of c', e.g. BN or LN of the cell) or the identity. c: (N, H).
    Returns (h', c'), each (N, H); c' itself is never normalized, so the gradient along the cell
    path is untouched (Cooijmans et al.).
    """
    i, f, g, o = gates.chunk(4, dim=1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    cell_out = c_next if cell_norm is None else cell_norm(c_next)
    return torch.sigmoid(o) * torch.tanh(cell_out), c_next


def _init_uniform(hidden_size: int, parameters) -> None:
    # torch's LSTM init: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), in registration order,
    # so the same seed gives torch's weights
    bound = 1.0 / math.sqrt(hidden_size)
    for p in parameters:
        nn.init.uniform_(p, -bound, bound)


class LSTMCell(nn.Module):
    """torch.nn.LSTMCell from scratch: one step of the LSTM,

        a = x W_ih^T + b_ih + h W_hh^T + b_hh,   then `lstm_cell_update`.

    Same arguments, parameters (weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,)),
    state_dict keys and initialization as torch's. input (N, I) or unbatched (I,); hx = (h, c),
    each (N, H) or (H,), zeros when None. Returns (h', c').
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_uniform(self.hidden_size, self.parameters())

    def forward(self, input: torch.Tensor, hx=None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_float_input(input, (1, 2), self.input_size, self.weight_ih.dtype, "LSTMCell")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        if hx is None:
            h = c = x.new_zeros(len(x), self.hidden_size)
        else:
            h, c = _check_state(hx, (len(x), self.hidden_size) if not unbatched else (self.hidden_size,), "hx")
            h, c = (h.unsqueeze(0), c.unsqueeze(0)) if unbatched else (h, c)
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        h, c = lstm_cell_update(gates, c)
        return (h[0], c[0]) if unbatched else (h, c)


class LSTM(nn.Module):
    """A one-layer LSTM as an explicit loop over time, optionally normalized. At step t, with
    pre-activations a_x = W_ih x_t and a_h = W_hh h_{t-1} (each (N, 4H)) and b = b_ih + b_hh:

      norm=None        a = a_x + a_h + b,                 h_t = o * tanh(c_t)     (torch.nn.LSTM)
      norm='bn'        a = BN_t(a_x) + BN_t(a_h) + b,     h_t = o * tanh(BN_t(c_t))
      norm='bn_input'  a = BN(a_x) + a_h + b,             h_t = o * tanh(c_t)
      norm='ln'        a = LN(a_x) + LN(a_h) + b,         h_t = o * tanh(LN(c_t))

    then c_t = sigmoid(a_f) * c_{t-1} + sigmoid(a_i) * tanh(a_g), o = sigmoid(a_o) (see
    `lstm_cell_update`; c_t itself is never normalized).

    'bn' is Cooijmans et al. 2016's BN-LSTM: three `SequenceBatchNorm` (norm_ih, norm_hh over 4H,
    norm_c over H), each with its own statistics at every step t < max_steps and one gamma shared
    over time, initialized to gamma_init = 0.1; the two paths have no beta (b carries the shift),
    norm_c has one (beta_c = 0). Steps beyond max_steps follow beyond ('last' or 'none', see
    SequenceBatchNorm). In training every step needs at least 2 sequences: a batch of one has no
    variance at a step, and is refused with a ValueError (eval works at any batch size).
    'bn_input' is Laurent et al. 2016's: one `bnlab.BatchNorm1d` (norm_ih, gamma only, gamma_init
    1) on the input path, its statistics over batch and time together (all N * T pre-activations,
    their 'sequence-wise' normalization), one set of running statistics for every step.
    'ln' is Ba et al. 2016's LayerNorm LSTM: bnlab.norms.LayerNorm (torch's, from scratch) over each path's 4H
    pre-activations (norm_ih, norm_hh, gain only, gamma_init 1) and over c_t's H values (norm_c,
    gain and bias); per example, so the same at any length and any batch size, in training and eval.

    Parameters weight_ih_l0 (4H, I), weight_hh_l0 (4H, H), bias_ih_l0, bias_hh_l0 (4H,) are
    torch.nn.LSTM's, with its names and its initialization (the same seed gives the same
    weights): with norm=None the state_dicts load both ways, and `from_torch` / `to_torch` copy a
    torch LSTM; only one layer, one direction, no projection (num_layers must be 1).

    forward(input, hx=None, lengths=None): input (N, T, I) with batch_first (the default here,
    unlike torch), (T, N, I) without, or unbatched (T, I); hx = (h_0, c_0), each (1, N, H).
    Returns output (N, T, H) (or (T, N, H), (T, H)), the h_t of every step, and (h_n, c_n), each
    (1, N, H). lengths (N,): the true length of each padded sequence; then sequence i stops at
    step lengths[i] - 1, as with torch's packed sequences: output is 0 after it, (h_n, c_n) is its
    state there, and BN's statistics at step t (batch and running) are over the sequences still
    running at t only. A step where exactly one sequence is still running has no batch variance:
    norm='bn' refuses it in training (pad to a length that two sequences share, or bucket by
    length). `padding_effect` measures what BN's statistics would be if the padding counted.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, norm: str | None = None,
                 bias: bool = True, batch_first: bool = True, max_steps: int | None = None, beyond: str = "last",
                 eps: float = 1e-5, momentum: float | None = 0.1, gamma_init: float | None = None,
                 device=None, dtype=None):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        if num_layers != 1:
            raise ValueError(f"bnlab's LSTM has one layer (num_layers=1), got num_layers={num_layers!r}; "
                             "stack several for more")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if norm == "bn" and max_steps is None:
            raise ValueError("norm='bn' keeps statistics per time step: give max_steps, the longest "
                             "training sequence")
        if max_steps is not None and not _is_int(max_steps, 1):
            raise ValueError(f"max_steps must be an int >= 1 or None, got {max_steps!r}")
        _check_beyond(beyond)
        if gamma_init is not None and not (isinstance(gamma_init, numbers.Real) and math.isfinite(gamma_init)):
            raise ValueError(f"gamma_init must be a finite number or None, got {gamma_init!r}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, 1
        self.bias, self.batch_first, self.norm = bias, batch_first, norm
        self.max_steps, self.eps, self.momentum = max_steps, eps, momentum
        self.gamma_init = DEFAULT_GAMMA.get(norm) if gamma_init is None else float(gamma_init)
        gates = 4 * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates, input_size, **factory))
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates, hidden_size, **factory))
        if bias:
            self.bias_ih_l0 = nn.Parameter(torch.empty(gates, **factory))
            self.bias_hh_l0 = nn.Parameter(torch.empty(gates, **factory))
        else:
            self.register_parameter("bias_ih_l0", None)
            self.register_parameter("bias_hh_l0", None)
        self.norm_ih = self.norm_hh = self.norm_c = None
        if norm == "bn":
            per_step = dict(max_steps=max_steps, eps=eps, momentum=momentum, beyond=beyond, **factory)
            self.norm_ih = SequenceBatchNorm(gates, bias=False, **per_step)
            self.norm_hh = SequenceBatchNorm(gates, bias=False, **per_step)
            self.norm_c = SequenceBatchNorm(hidden_size, bias=True, **per_step)
        elif norm == "bn_input":
            self.norm_ih = BatchNorm1d(gates, eps=eps, momentum=momentum, bias=False, **factory)
        elif norm == "ln":
            self.norm_ih = LayerNorm(gates, eps=eps, bias=False, **factory)
            self.norm_hh = LayerNorm(gates, eps=eps, bias=False, **factory)
            self.norm_c = LayerNorm(hidden_size, eps=eps, **factory)
        self._beyond = beyond
        self.reset_parameters()

    # ------------------------------------------------------------------------- setup
    @property
    def beyond(self) -> str:
        """What norm='bn' does at steps t >= max_steps: 'last' or 'none' (see SequenceBatchNorm)."""
        return self._beyond

    @beyond.setter
    def beyond(self, value: str) -> None:
        _check_beyond(value)
        self._beyond = value
        for norm in self._norms():
            if isinstance(norm, SequenceBatchNorm):
                norm.beyond = value

    def _norms(self):
        return [n for n in (self.norm_ih, self.norm_hh, self.norm_c) if n is not None]

    def reset_parameters(self) -> None:
        _init_uniform(self.hidden_size, [p for p in (self.weight_ih_l0, self.weight_hh_l0,
                                                     self.bias_ih_l0, self.bias_hh_l0) if p is not None])
        for norm in self._norms():
            norm.reset_parameters()
            if norm.weight is not None:
                with torch.no_grad():
                    norm.weight.fill_(self.gamma_init)

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, **kwargs) -> "LSTM":
        """An LSTM with the weights (copies) of a one-layer, one-direction torch.nn.LSTM, its
        bias and batch_first, on its device in its dtype; kwargs (norm=..., max_steps=...) as the
        constructor's. With a norm, the normalization's parameters start as a fresh model's."""
        if not isinstance(lstm, nn.LSTM):
            raise ValueError(f"from_torch needs a torch.nn.LSTM, got {type(lstm).__name__}")
        if lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
            raise ValueError(f"from_torch copies a one-layer, one-direction LSTM without projection; got "
                             f"num_layers={lstm.num_layers}, bidirectional={lstm.bidirectional}, "
                             f"proj_size={lstm.proj_size}")
        weight = lstm.weight_ih_l0
        options = dict(bias=lstm.bias, batch_first=lstm.batch_first, device=weight.device, dtype=weight.dtype)
        ours = cls(lstm.input_size, lstm.hidden_size, **{**options, **kwargs})
        missing, unexpected = ours.load_state_dict(lstm.state_dict(), strict=False)
        if unexpected or any(not key.startswith("norm_") for key in missing):
            raise ValueError(f"torch's LSTM and this one do not match: missing {missing}, unexpected {unexpected}")
        return ours

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with this one's weights (copies); norm=None only (torch has no normalized LSTM)."""
        if self.norm is not None:
            raise ValueError(f"torch.nn.LSTM has no normalization; to_torch needs norm=None, this one has "
                             f"norm={self.norm!r}")
        weight = self.weight_ih_l0
        lstm = nn.LSTM(self.input_size, self.hidden_size, bias=self.bias, batch_first=self.batch_first,
                       device=weight.device, dtype=weight.dtype)
        lstm.load_state_dict(self.state_dict())
        return lstm

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}, batch_first={self.batch_first}"
        if not self.bias:
            text += ", bias=False"
        if self.norm == "bn":
            text += f", max_steps={self.max_steps}, beyond={self.beyond!r}"
        return text

    # ------------------------------------------------------------------------- forward
    def forward(self, input: torch.Tensor, hx=None, lengths=None):
        x, hx, unbatched = self._batch_first_input(input, hx)
        output, (h_n, c_n) = self._run(x, hx, self._check_lengths(lengths, x))
        if unbatched:
            return output[0], (h_n[:, 0], c_n[:, 0])
        return (output if self.batch_first else output.transpose(0, 1)), (h_n, c_n)

    def _batch_first_input(self, input, hx):
        """(x (N, T, I), hx as (h_0, c_0) each (N, H) or None, unbatched)."""
        _check_float_input(input, (2, 3), self.input_size, self.weight_ih_l0.dtype, "LSTM")
        unbatched = input.dim() == 2
        x = input.unsqueeze(0) if unbatched else (input if self.batch_first else input.transpose(0, 1))
        if len(x) == 0 or x.shape[1] == 0:
            raise ValueError(f"LSTM needs at least one sequence of at least one step, got input of shape "
                             f"{tuple(input.shape)}")
        if hx is not None:
            shape = (1, self.hidden_size) if unbatched else (1, len(x), self.hidden_size)
            h, c = _check_state(hx, shape, "hx")
            hx = (h[0:1], c[0:1]) if unbatched else (h[0], c[0])
        return x, hx, unbatched

    def _check_lengths(self, lengths, x) -> torch.Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths)
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.dim() != 1:
            raise ValueError(f"lengths must be (N,) integers, got {tuple(lengths.shape)} {lengths.dtype}")
        N, T = x.shape[:2]
        if len(lengths) != N:
            raise ValueError(f"lengths has {len(lengths)} entries for a batch of {N} sequences")
        if len(lengths) and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths must be in 1..{T} (the padded length), got values from "
                             f"{int(lengths.min())} to {int(lengths.max())}")
        return lengths.to(device=x.device, dtype=torch.int64)

    def _check_statistics(self, counts: torch.Tensor) -> None:
        """Refuse, before any running statistic moves, a training pass whose BN would see a single
        value per feature, and steps beyond max_steps with beyond='none'. counts (T,): the number
        of sequences in the statistics at each step."""
        if self.norm == "bn":
            steps = int(torch.nonzero(counts).max()) + 1
            if self.beyond == "none" and steps > self.max_steps:
                raise ValueError(f"sequences of {steps} steps, longer than max_steps={self.max_steps}, with "
                                 "beyond='none'; use beyond='last' or a larger max_steps")
            if self.training and bool((counts == 1).any()):
                t = int(torch.nonzero(counts == 1)[0])
                raise ValueError(f"norm='bn' in training needs at least 2 sequences at every step (BN's batch "
                                 f"variance of a single sequence is undefined); at step {t} only 1 is running"
                                 + (" (a batch of one)" if len(counts) and counts.max() == 1 else
                                    ": pad to a length that two sequences share, or bucket by length")
                                 + ". Use eval mode or norm='ln' for single sequences")
        elif self.norm == "bn_input" and self.training and int(counts.sum()) < 2:
            raise ValueError("norm='bn_input' in training needs at least 2 time steps in the batch (its statistics "
                             "are over batch and time); got a single step of a single sequence")

    def _run(self, x, hx, lengths, mask_statistics: bool = True, trace: dict | None = None):
        """The loop over time on batch-first x (N, T, I). mask_statistics=False lets padded steps run
        like real ones (their rows count in BN's statistics) and only reads h_n and the outputs at
        the true lengths: what a model that ignored padding would do. trace, a dict, collects per
        step the raw pre-activations 'input' (a_x), 'hidden' (a_h) and 'cell' (c_t) of the rows
        computed there, and 'rows' (their indices, or None for all)."""
        N, T, _ = x.shape
        masked = lengths is not None and mask_statistics
        valid = torch.arange(T, device=x.device) < lengths[:, None] if lengths is not None else None
        counts = valid.sum(0) if masked else torch.full((T,), N, device=x.device)
        self._check_statistics(counts)
        if hx is None:
            h = c = x.new_zeros(N, self.hidden_size)
        else:
            h, c = hx
        input_gates = F.linear(x, self.weight_ih_l0)                     # (N, T, 4H): all steps at once
        normalized_inputs = self._normalize_input_path(input_gates, valid if masked else None)
        bias = self.bias_ih_l0 + self.bias_hh_l0 if self.bias else None
        outputs, cells = [], []
        for t in range(T):
            rows = None
            if masked and not bool(valid[:, t].all()):
                rows = torch.nonzero(valid[:, t]).squeeze(1)
            if rows is not None and len(rows) == 0:
                outputs.append(h.new_zeros(N, self.hidden_size))
                cells.append(c)
                continue
            a_x = normalized_inputs[:, t] if rows is None else normalized_inputs[rows, t]
            if self.norm == "bn":
                a_x = self.norm_ih(a_x, t)
            h_prev, c_prev = (h, c) if rows is None else (h[rows], c[rows])
            a_h = F.linear(h_prev, self.weight_hh_l0)
            gates = a_x + self._normalize(self.norm_hh, a_h, t)
            if bias is not None:
                gates = gates + bias
            cell_norm = None if self.norm_c is None else functools.partial(self._normalize, self.norm_c, t=t)
            h_next, c_next = lstm_cell_update(gates, c_prev, cell_norm)
            if trace is not None:
                raw = input_gates[:, t] if rows is None else input_gates[rows, t]
                for key, value in (("input", raw), ("hidden", a_h), ("cell", c_next), ("rows", rows)):
                    trace.setdefault(key, []).append(value)
            if rows is None:
                h, c = h_next, c_next
                outputs.append(h)
            else:
                # finished sequences keep their last state, as with torch's packed sequences
                h, c = h.index_copy(0, rows, h_next), c.index_copy(0, rows, c_next)
                outputs.append(h.new_zeros(N, self.hidden_size).index_copy(0, rows, h_next))
            cells.append(c)
        output = torch.stack(outputs, dim=1)
        if lengths is not None and not mask_statistics:
            last = lengths - 1
            index = torch.arange(N, device=x.device)
            h, c = output[index, last], torch.stack(cells, dim=1)[index, last]
            output = output * valid[:, :, None]
        return output, (h.unsqueeze(0), c.unsqueeze(0))

    def _normalize(self, norm, value, t):
        if norm is None:
            return value
        return norm(value, t) if isinstance(norm, SequenceBatchNorm) else norm(value)

    def _normalize_input_path(self, input_gates, valid):
        """a_x for every step: as it is for 'bn' (normalized step by step in the loop) and None,
        LN'ed per example for 'ln', BN'ed over batch and time for 'bn_input' (over the valid
        steps only when valid (N, T) is given)."""
        if self.norm == "ln":
            return self.norm_ih(input_gates)
        if self.norm != "bn_input":
            return input_gates
        N, T, G = input_gates.shape
        if valid is None:
            return self.norm_ih(input_gates.reshape(N * T, G)).reshape(N, T, G)
        return input_gates.new_zeros(N, T, G).index_put((valid,), self.norm_ih(input_gates[valid]))


def _check_sizes(input_size, hidden_size) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not _is_int(value, 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def _check_float_input(input, dims, size, dtype, who) -> None:
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"{who}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() not in dims or input.shape[-1] != size:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{who}: expected {want} input with {size} features on the last dim, got shape "
                         f"{tuple(input.shape)}")
    if input.dtype != dtype:
        raise ValueError(f"{who}: input has dtype {input.dtype} but the weights have {dtype}; convert one of them "
                         "(e.g. model.double() or input.float())")


def _check_state(hx, shape, name):
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, torch.Tensor) for t in hx)):
        raise ValueError(f"{name} must be a pair (h, c) of tensors, got {type(hx).__name__}")
    for part, t in zip("hc", hx):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: {part} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return hx


# ============================================================================= models
class _LastStepReadout(nn.Module):
    """An `LSTM` (batch_first) and a linear head on h_n, its state at each sequence's last step."""

    def __init__(self, input_size: int, hidden_size: int, outputs: int, norm: str | None, lstm_kwargs: dict):
        super().__init__()
        self.lstm = LSTM(input_size, hidden_size, norm=norm, batch_first=True, **lstm_kwargs)
        weight = self.lstm.weight_ih_l0
        self.head = nn.Linear(hidden_size, outputs, device=weight.device, dtype=weight.dtype)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        _, (h_n, _) = self.lstm(x, lengths=lengths)
        return self.head(h_n[0])


class SequenceClassifier(_LastStepReadout):
    """An `LSTM` read out at its last step: logits = W h_n + b, from each sequence's own last step
    when lengths are given. x (N, T, input_size) -> logits (N, num_classes). lstm_kwargs go to
    the LSTM (max_steps=..., beyond=..., gamma_init=..., dtype=...)."""

    def __init__(self, input_size: int, hidden_size: int, num_classes: int, norm: str | None = None,
                 **lstm_kwargs):
        if not _is_int(num_classes, 2):
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        super().__init__(input_size, hidden_size, num_classes, norm, lstm_kwargs)


class SequenceRegressor(_LastStepReadout):
    """An `LSTM` read out at its last step as one number (the adding problem's sum):
    y = w . h_n + b. x (N, T, input_size) -> (N,). lstm_kwargs go to the LSTM."""

    def __init__(self, input_size: int, hidden_size: int, norm: str | None = None, **lstm_kwargs):
        super().__init__(input_size, hidden_size, 1, norm, lstm_kwargs)

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return super().forward(x, lengths).squeeze(-1)


def _find_lstm(model: nn.Module) -> LSTM:
    found = [m for m in model.modules() if isinstance(m, LSTM)]
    if len(found) != 1:
        raise ValueError(f"expected a bnlab LSTM or a model holding exactly one, found {len(found)} in "
                         f"{type(model).__name__}")
    return found[0]


@contextlib.contextmanager
def _untouched(model: nn.Module):
    """No gradients, and every buffer (running statistics) and train/eval mode back as they were."""
    buffers = [b.clone() for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        with torch.no_grad():
            yield
    finally:
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode


# ============================================================================= measurements
def _variance_over_rows(values: torch.Tensor) -> float:
    """mean over features of the batch variance sigma^2_B (biased, as BN's): nan for < 2 rows."""
    if len(values) < 2:
        return math.nan
    return float(values.double().var(dim=0, unbiased=False).mean())


def hidden_preactivation_variance(model: nn.Module, x: torch.Tensor, lengths=None) -> dict[str, torch.Tensor]:
    """Per time step t, the batch variance of the LSTM's pre-activations, before any normalization,
    averaged over their features:

        'input':  mean_k Var_B (W_ih x_t)_k          (4H features)
        'hidden': mean_k Var_B (W_hh h_{t-1})_k      (4H features; 0 at t = 0 from h_0 = 0)
        'cell':   mean_k Var_B (c_t)_k               (H features)

    over the sequences still running at t when lengths are given. What a per-step BN would divide
    by: when it changes with t (the hidden path grows from 0 over the first steps), one set of
    statistics for all steps fits none of them. model: an `LSTM`, or a model holding one that sees
    x as given (SequenceClassifier, SequenceRegressor); run in its current mode, with its running
    statistics left as they were. Returns a dict of (T,) float64 tensors.
    """
    lstm = _find_lstm(model)
    with _untouched(lstm):
        x_first, hx, _ = lstm._batch_first_input(x, None)
        trace: dict = {}
        lstm._run(x_first, hx, lstm._check_lengths(lengths, x_first), trace=trace)
    T = x_first.shape[1]
    result = {key: torch.full((T,), math.nan, dtype=torch.float64) for key in ("input", "hidden", "cell")}
    # the trace holds the steps where at least one sequence ran, in order
    ran = [t for t in range(T) if lengths is None or bool((torch.as_tensor(lengths) > t).any())]
    for i, t in enumerate(ran):
        for key in result:
            result[key][t] = _variance_over_rows(trace[key][i])
    return result


@dataclass
class PaddingEffect:
    """What counting padded steps in BN's statistics does (see `padding_effect`). Per time step t,
    for each BN path p ('input', 'hidden', 'cell'):

      mean_shift[p][t]  mean_k |mu_all - mu_running|_k / sqrt(sigma^2_running + eps)_k: how far the
                        mean over the padded batch moves from the mean over the running sequences,
                        in the running sequences' standard deviations
      var_ratio[p][t]   mean_k (sigma^2_all + eps)_k / (sigma^2_running + eps)_k: 1 where padding
                        changes nothing
    running (T,): sequences still running at t. output_change (N,): max_j |h_n(masked) -
    h_n(padding counted)|_j per sequence, what the padding did to each sequence's final state.
    """

    running: torch.Tensor
    mean_shift: dict[str, torch.Tensor]
    var_ratio: dict[str, torch.Tensor]
    output_change: torch.Tensor


def padding_effect(model: nn.Module, x: torch.Tensor, lengths) -> PaddingEffect:
    """Compare a BN-LSTM's training-mode statistics on a padded batch with masking (statistics of
    step t over the sequences still running at t, what `LSTM` does with lengths) and without (the
    padded rows, fed zeros and running on, count in the statistics, as they would for a model
    that ignored lengths except to read h_n at each sequence's last step).

    model: an `LSTM` with norm='bn', or a model holding one that sees x as given; x: a padded
    batch (N, T, I) (batch_first as the LSTM), lengths (N,). Both passes run in training mode
    (batch statistics) without gradients; the running statistics and modes are left as they were.
    """
    lstm = _find_lstm(model)
    if lstm.norm != "bn":
        raise ValueError(f"padding_effect measures per-step BN statistics: it needs norm='bn', got {lstm.norm!r}")
    if lengths is None:
        raise ValueError("padding_effect needs the lengths of the padded sequences")
    with _untouched(lstm):
        lstm.train()
        x_first, hx, _ = lstm._batch_first_input(x, None)
        lengths = lstm._check_lengths(lengths, x_first)
        _, (h_masked, _) = lstm._run(x_first, hx, lengths)
        trace: dict = {}
        _, (h_padded, _) = lstm._run(x_first, hx, lengths, mask_statistics=False, trace=trace)
    T = x_first.shape[1]
    valid = torch.arange(T, device=lengths.device) < lengths[:, None]
    eps = lstm.eps
    mean_shift, var_ratio = {}, {}
    for key in ("input", "hidden", "cell"):
        shift, ratio = torch.full((T,), math.nan, dtype=torch.float64), torch.full((T,), math.nan, dtype=torch.float64)
        for t in range(T):
            every = trace[key][t].double()
            running = every[valid[:, t]]
            if len(running) < 2:
                continue
            var_running = running.var(0, unbiased=False) + eps
            shift[t] = ((every.mean(0) - running.mean(0)).abs() / var_running.sqrt()).mean()
            ratio[t] = ((every.var(0, unbiased=False) + eps) / var_running).mean()
        mean_shift[key], var_ratio[key] = shift, ratio
    change = (h_masked[0] - h_padded[0]).abs().amax(dim=1)
    return PaddingEffect(valid.sum(0).cpu(), mean_shift, var_ratio, change.double().cpu())


# ============================================================================= training
@dataclass
class SequenceHistory:
    """What `train_sequence_model` recorded: the training loss at every step, and at eval_steps
    (step 0 = before training) one metric per test set in metrics[name]: 'accuracy' (fraction
    right) for classification, 'mse' (mean squared error) for regression, as `metric` says.
    seconds: wall-clock time of the training steps alone (evaluations excluded); ms_per_step its
    average. diverged_at: the step whose loss was not finite (training stopped there), or None."""

    metric: str
    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    diverged_at: int | None = None
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / len(self.loss) if self.loss else math.nan

    def final(self, name: str) -> float:
        """The last evaluation of test set name."""
        if name not in self.metrics:
            raise ValueError(f"no test set {name!r}; recorded: {list(self.metrics)}")
        return self.metrics[name][-1]


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classification: bool,
              batch_size: int = 512) -> float:
    with _untouched(model):
        model.eval()
        total = 0.0
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            target = y[i:i + batch_size]
            total += float((out.argmax(1) == target).sum() if classification else ((out - target) ** 2).sum())
    return total / len(x)


def train_sequence_model(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, tests: dict,
                         steps: int = 300, batch_size: int = 64, lr: float = 1e-2, optimizer: str = "adam",
                         eval_every: int = 50, seed: int = 0, max_grad_norm: float | None = 1.0,
                         progress: bool = False) -> SequenceHistory:
    """Train model on minibatches of batch_size drawn with replacement (seeded by seed) from
    (x_train (N, T, F), y_train): cross-entropy for int64 labels y (N,), mean squared error for
    float targets (N,). Gradients are clipped to a norm of max_grad_norm (None: not clipped), as
    LSTMs usually are. tests {name: (x, y)} are evaluated in eval mode (running statistics) at
    step 0, every eval_every steps and at the end. On the CPU, where tiny recurrent nets run
    fastest. Returns a `SequenceHistory`.
    """
    if not (_is_int(steps, 1) and _is_int(batch_size, 2) and _is_int(eval_every, 1)):
        raise ValueError(f"need steps >= 1, batch_size >= 2 (BN needs two sequences) and eval_every >= 1, "
                         f"got {steps!r}, {batch_size!r}, {eval_every!r}")
    if len(x_train) != len(y_train) or x_train.dim() != 3:
        raise ValueError(f"need x_train (N, T, F) and y_train (N,) of the same N, got {tuple(x_train.shape)} "
                         f"and {tuple(y_train.shape)}")
    if max_grad_norm is not None and not max_grad_norm > 0:
        raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
    classification = not y_train.is_floating_point()
    loss_fn = nn.CrossEntropyLoss() if classification else nn.MSELoss()
    history = SequenceHistory(metric="accuracy" if classification else "mse", model=model)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)

    def record(step):
        history.eval_steps.append(step)
        for name, (x, y) in tests.items():
            history.metrics.setdefault(name, []).append(_evaluate(model, x, y, classification))

    model.train()
    record(0)
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="training", leave=False):
        start = time.perf_counter()
        idx = torch.randint(len(x_train), (batch_size,), generator=gen)
        loss = loss_fn(model(x_train[idx]), y_train[idx])
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
    return history


def _seeded(seed: int, build):
    # the model's initial weights from seed, without moving torch's global generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def train_digit_sequences(norm: str | None = None, order: str = "rows", steps: int = 300, seed: int = 0,
                          hidden_size: int = 32, batch_size: int = 64, lr: float = 1e-2, eval_every: int = 50,
                          progress: bool = False, **lstm_kwargs) -> SequenceHistory:
    """A `SequenceClassifier` with the given norm trained on `bnlab.data.digit_sequences` (rows:
    8 steps of 8 pixels; pixels: 64 steps of 1), Adam at lr, seed for its weights and batches.
    max_steps is the sequence length. metrics['test']: test accuracy in eval mode."""
    x, y = digit_sequences("train", order)
    x_test, y_test = digit_sequences("test", order)
    lstm_kwargs.setdefault("max_steps", x.shape[1])
    model = _seeded(seed, lambda: SequenceClassifier(x.shape[2], hidden_size, 10, norm, **lstm_kwargs))
    return train_sequence_model(model, x, y, {"test": (x_test, y_test)}, steps=steps, batch_size=batch_size,
                                lr=lr, eval_every=eval_every, seed=seed, progress=progress)


def train_adding_problem(norm: str | None = None, length: int = 20, steps: int = 500, seed: int = 0,
                         test_lengths=None, n_train: int = 10_000, n_test: int = 1_000, hidden_size: int = 32,
                         batch_size: int = 64, lr: float = 1e-2, eval_every: int = 100, progress: bool = False,
                         **lstm_kwargs) -> SequenceHistory:
    """A `SequenceRegressor` with the given norm trained on `bnlab.data.adding_problem` sequences of
    `length` steps, tested on fresh sequences of each of test_lengths (default length, 2 length,
    4 length): metrics[f'length {L}'] is the test MSE there (1/6 for always answering 1). max_steps
    is the training length, so a BN-LSTM meets longer sequences with beyond='last' (its last step's
    statistics), unless lstm_kwargs say otherwise."""
    test_lengths = (length, 2 * length, 4 * length) if test_lengths is None else tuple(test_lengths)
    x, y = adding_problem(n_train, length, seed, "train")
    tests = {f"length {L}": adding_problem(n_test, L, seed, "test") for L in test_lengths}
    lstm_kwargs.setdefault("max_steps", length)
    model = _seeded(seed, lambda: SequenceRegressor(2, hidden_size, norm, **lstm_kwargs))
    return train_sequence_model(model, x, y, tests, steps=steps, batch_size=batch_size, lr=lr,
                                eval_every=eval_every, seed=seed, progress=progress)
