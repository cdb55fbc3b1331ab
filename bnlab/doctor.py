"""`doctor(model, batch)`: finds the batch-normalization mistakes the course shows, in any ``nn.Module``.

Each finding names the layer to change and says what is wrong and how to fix it. Some checks read
the model's settings (modes, momentum, running statistics); the others need to know which module
feeds which BN layer: with a batch, the doctor runs it once and watches the tensors pass; without
one it guesses from the order in which the modules were registered.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .layers import is_batchnorm

__all__ = ["Finding", "FINDINGS", "doctor"]

# id -> what it means, in the order findings about one layer are listed
FINDINGS = {
    "bias_before_bn": "a conv/linear layer with a bias feeds a BN directly: the bias is wasted",
    "dropout_before_bn": "Dropout feeds a BN directly: variance shift at eval (lesson 10)",
    "no_running_stats": "a BN with track_running_stats=False in a model in eval mode: batch statistics at test time",
    "mixed_modes": "a BN layer in training mode inside a model in eval mode",
    "running_stats_never_updated": "eval mode, and a BN that never saw a training batch: its statistics are 0 and 1",
    "single_value_per_channel": "with the given batch, a BN using batch statistics sees one value per channel",
    "cumulative_momentum": "momentum=None left on: the running statistics are a cumulative average",
    "forward_error": "the batch raised an error; the checks that need it cover the layers reached before it",
}

_GUESS = (" (Guessed from the order the modules were registered in, which need not be the order forward "
          "calls them: pass a batch to doctor to check.)")


@dataclass(frozen=True)
class Finding:
    """One problem: ``id`` (a key of FINDINGS), ``layer`` (the qualified name, as model.named_modules()
    gives it, of the module to change; '' is the model itself) and ``message`` (what is wrong, then
    ``Hint:`` and what to do)."""

    id: str
    layer: str
    message: str

    def __str__(self) -> str:
        return f"{self.layer or '(model)'}: {self.message} [{self.id}]"


def doctor(model: nn.Module, batch=None) -> list[Finding]:
    """Check model for BN mistakes; returns a list of `Finding` (empty when none), ordered by layer.

    Checked for every BN layer (`bnlab.layers.is_batchnorm`), from its settings:
        cumulative_momentum          momentum=None on a layer that keeps running statistics
    and when the model is in eval mode (model.training is False):
        mixed_modes                  the BN layer itself is still in training mode
        no_running_stats             it has no running statistics, so eval uses batch statistics
        running_stats_never_updated  num_batches_tracked = 0 and running_mean = 0, running_var = 1
    What feeds a BN layer directly (a conv/linear with a bias: bias_before_bn; a Dropout:
    dropout_before_bn) needs the execution order:
        batch given: model(batch) runs once under torch.no_grad. Forward hooks note which leaf
            module returned each tensor, and a BN's feeder is the module whose output *is* its input
            tensor (a functional op in between, F.relu(x), makes a new tensor, so nothing is found).
            A Linear counts only on a 2-D input, where its bias lies along BN's channel axis. A BN
            that uses batch statistics and gets one value per channel (a (1, C) batch in training)
            is reported as single_value_per_channel, and the run stops there, before torch raises;
            BN layers after it, and those after any error the batch raises (reported as
            forward_error), fall back to the guess below.
        no batch: the leaf modules in registration order (nn.Sequential's order), and a BN's feeder
            is the leaf just before it, if its output width matches the BN's. Right for
            Sequential-style models; a model whose forward calls modules in another order can get
            a wrong finding or miss one. Those findings say they are guessed.
    batch: the model's input, a tensor (model(batch)), a tuple or list (model(*batch)) or a dict
    (model(**batch)); its tensors are moved to the model's device.

    The model is left as it was: every buffer (running statistics, num_batches_tracked) is restored
    in place, every module's training flag is put back, the hooks are removed, and torch's random
    state is restored (Dropout draws from it), also when the batch raises.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"doctor expects an nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    order = {name: i for i, name in enumerate(modules)}
    bns = [(name, m) for name, m in modules.items() if is_batchnorm(m)]
    findings: list[Finding] = []
    for name, bn in bns:
        findings += _settings_findings(name, bn, model.training)

    guessed = _feeders_by_registration(model)
    if batch is None:
        for name, bn in bns:
            findings += _feeder_findings(name, bn, guessed.get(name), modules, guess=True)
    else:
        trace = _run_traced(model, batch)
        findings += trace.findings
        for name, bn in bns:
            if name in trace.feeders:
                for feeder, ndim in trace.feeders[name]:
                    findings += _feeder_findings(name, bn, feeder, modules, guess=False, input_ndim=ndim)
            elif trace.stopped:
                # not reached because the run stopped early: the registration order is all there is
                findings += _feeder_findings(name, bn, guessed.get(name), modules, guess=True)
            # reached by neither: the BN is not used by forward, so nothing feeds it

    ids = list(FINDINGS)
    unique = list(dict.fromkeys(findings))  # a BN called twice by forward reports once
    return sorted(unique, key=lambda f: (order.get(f.layer, len(order)), ids.index(f.id)))


# ----------------------------------------------------------------------------- from the settings alone
def _settings_findings(name: str, bn: nn.Module, model_training: bool) -> list[Finding]:
    found = []
    has_running = getattr(bn, "running_mean", None) is not None
    if not model_training:
        if not has_running:
            found.append(Finding("no_running_stats", name, (
                "The model is in eval mode, but this BN layer keeps no running statistics "
                "(track_running_stats=False), so it normalizes each test batch with that batch's own mean "
                "and variance: an example's output depends on the rest of its batch, and one example alone "
                "cannot be normalized. Hint: create it with track_running_stats=True (the default) and train, "
                "or fill the statistics with bnlab.train.recompute_batchnorm_statistics.")))
        if bn.training:
            found.append(Finding("mixed_modes", name, (
                "This BN layer is in training mode inside a model in eval mode (model.eval() came before a "
                ".train() on part of the model): at test time it normalizes with batch statistics and keeps "
                "updating its running statistics. Hint: call model.eval() last, after any .train() on "
                "submodules.")))
        if has_running and _never_updated(bn):
            found.append(Finding("running_stats_never_updated", name, (
                "The model is in eval mode, but this BN layer has never seen a training batch "
                "(num_batches_tracked = 0): running_mean is still 0 and running_var 1, so in eval mode it "
                "passes its input through unnormalized (but for gamma and beta). Hint: train the model in "
                "train mode first, or fill the statistics with "
                "bnlab.train.recompute_batchnorm_statistics(model, x_train).")))
    if has_running and bn.momentum is None:
        found.append(Finding("cumulative_momentum", name, (
            "momentum=None: the running statistics are a cumulative average of every batch since the last "
            "reset, each new batch weighted 1/t, so they stop following the network as it trains (a "
            "statistics recompute uses momentum=None for its own pass only). Hint: set momentum back, "
            "e.g. 0.1, torch's default, before training on.")))
    return found


def _never_updated(bn: nn.Module) -> bool:
    """num_batches_tracked is 0 (or absent) and the statistics are still the initial 0 and 1: a count
    of 0 alone could come from a state_dict saved before torch counted batches, with real statistics."""
    count = getattr(bn, "num_batches_tracked", None)
    if count is not None and int(count) != 0:
        return False
    return bool(torch.all(bn.running_mean == 0)) and bool(torch.all(bn.running_var == 1))


# ----------------------------------------------------------------------------- what feeds a BN
def _is_biased_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module.bias is not None


def _is_dropout(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.dropout._DropoutNd)


def _width(module: nn.Module):
    """Output channels of a conv/linear layer, None for other modules."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return None


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, in registration order. nn.Identity passes its input on and an empty
    container does nothing, so neither stands between a layer and a BN."""
    return [(name, m) for name, m in model.named_modules()
            if not any(True for _ in m.children()) and not isinstance(m, nn.Identity)
            and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]


def _feeders_by_registration(model: nn.Module) -> dict[str, str]:
    """BN name -> the leaf registered just before it (the guess without a batch)."""
    feeders = {}
    leaves = _leaves(model)
    for (before, _), (name, module) in zip(leaves, leaves[1:]):
        if is_batchnorm(module):
            feeders[name] = before
    return feeders


def _feeder_findings(bn_name: str, bn: nn.Module, feeder_name, modules: dict, guess: bool,
                     input_ndim: int | None = None) -> list[Finding]:
    if feeder_name is None:
        return []
    feeder = modules[feeder_name]
    where = f"feeds the BN layer {bn_name!r} directly"
    note = _GUESS if guess else ""
    if _is_biased_layer(feeder):
        if guess and _width(feeder) != bn.num_features:
            return []  # its output cannot be this BN's input
        if isinstance(feeder, nn.Linear) and input_ndim not in (None, 2):
            return []  # on (N, C, L) a Linear's bias varies along L, which BN does not average out
        return [Finding("bias_before_bn", feeder_name, (
            f"This {type(feeder).__name__} has a bias and {where}. BN subtracts each channel's batch mean, "
            f"so the bias cancels out (BN's beta is the shift that remains): a wasted parameter per channel. "
            f"Hint: create it with bias=False.{note}"))]
    if _is_dropout(feeder):
        return [Finding("dropout_before_bn", feeder_name, (
            f"This {type(feeder).__name__} (p={feeder.p}) {where}. In training the BN layer's running variance "
            f"is measured on dropped-out activations; at eval dropout is off, the variance it sees is "
            f"different, and the running statistics no longer fit (variance shift, lesson 10). Hint: move the "
            f"Dropout after the BN layers, e.g. just before the classifier.{note}"))]
    return []


# ----------------------------------------------------------------------------- the traced run
class _Stop(Exception):
    """Raised by the doctor's own hook to end the run before torch raises on a bad BN input."""


@dataclass
class _Trace:
    feeders: dict   # BN name -> [(feeder name or None, input ndim)], one entry per call
    findings: list  # single_value_per_channel and forward_error
    stopped: bool   # the run ended before the model's forward returned


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


def _call(model: nn.Module, batch):
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def _values_per_channel(x: torch.Tensor) -> int:
    return x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] > 0 else x.numel()


def _run_traced(model: nn.Module, batch) -> _Trace:
    names = {m: name for name, m in model.named_modules()}
    # id(tensor) -> (weak reference, name of the leaf that returned it). The weak reference tells a
    # tensor from a later one that reuses the id of a freed tensor, without keeping outputs alive.
    produced: dict[int, tuple] = {}
    trace = _Trace(feeders={}, findings=[], stopped=False)
    running: list[str] = []  # the leaves whose forward has begun and not returned

    def note_entry(module, args):
        running.append(names[module])

    def note_output(module, args, output):
        running.pop()
        if isinstance(output, torch.Tensor):
            # the last leaf to return a tensor is its feeder: an in-place ReLU returns the conv's
            # output tensor after changing it
            produced[id(output)] = (weakref.ref(output), names[module])

    def check_bn_input(module, args):
        name = names[module]
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        ref, feeder = produced.get(id(x), (None, None))
        trace.feeders.setdefault(name, []).append((feeder if ref is not None and ref() is x else None, x.dim()))
        uses_batch_stats = module.training or module.running_mean is None
        if uses_batch_stats and _values_per_channel(x) <= 1:
            why = "is in training mode" if module.training else "keeps no running statistics"
            trace.findings.append(Finding("single_value_per_channel", name, (
                f"This BN layer {why}, so it normalizes with batch statistics, and the batch gives it input "
                f"of shape {tuple(x.shape)}: one value per channel. Its batch variance is 0, x_hat is 0 "
                f"whatever the input, and torch raises 'Expected more than 1 value per channel when "
                f"training'. Hint: use batches of at least 2 examples (far more for useful statistics), or "
                f"run single examples in eval mode. The doctor stopped the batch here; layers after it "
                f"were checked by registration order.")))
            raise _Stop

    leaves = [m for _, m in _leaves(model)]
    watched = list(dict.fromkeys(leaves + [m for m in names if is_batchnorm(m)]))
    handles = []
    flags = [(m, m.training) for m in model.modules()]
    buffers = [(m, dict(m._buffers)) for m in model.modules()]
    saved = {id(b): b.detach().clone() for _, bufs in buffers for b in bufs.values() if b is not None}
    devices = sorted({t.device.index for t in list(model.parameters()) + list(model.buffers())
                      if t.device.type == "cuda"})
    try:
        for m in watched:
            handles.append(m.register_forward_pre_hook(note_entry))
            handles.append(m.register_forward_hook(note_output))
            if is_batchnorm(m):
                handles.append(m.register_forward_pre_hook(check_bn_input))
        device = next((p.device for p in model.parameters()), None)
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            _call(model, _to(batch, device) if device is not None else batch)
    except _Stop:
        trace.stopped = True
    except Exception as error:  # the model's own error: report it with what was found before it
        trace.stopped = True
        # the leaf that raised, or the model itself when the error is in forward's own code
        layer = running[-1] if running else ""
        trace.findings.append(Finding("forward_error", layer, (
            f"Running the batch raised {type(error).__name__}: {error}. The checks that need the batch "
            f"covered the layers reached before the error; the others were checked by registration order. "
            f"Hint: pass a batch the model accepts (its input, not an (x, y) pair).")))
    finally:
        for handle in handles:
            handle.remove()
        for m, training in flags:
            m.training = training
        with torch.no_grad():
            for m, bufs in buffers:
                # the same tensor objects, with their old values: anything holding a buffer still sees it
                m._buffers.clear()
                m._buffers.update(bufs)
                for b in bufs.values():
                    if b is not None:
                        b.copy_(saved[id(b)])
    return trace
