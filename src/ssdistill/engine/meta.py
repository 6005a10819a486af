"""The meta step of a learned loss weighting (L-MCL's weighting network, after L2T-ww): virtual SGD steps of a model,
unrolled with their graph, and the outer loss at the virtual parameters back-propagated into the weighting network.

With θ₀ the model's current parameters, φ the weighting network's and L_t the loss of virtual step t (the weighted
inner loss, which depends on φ, or the outer loss for the extra ``outer_steps``), each step is PyTorch's SGD::

    d_t = ∇θ L_t(θ_{t-1}) + wd·θ_{t-1}
    b_t = d_t (t = 1, the buffer starts at zero)   or   μ·b_{t-1} + d_t
    θ_t = θ_{t-1} − lr·b_t

Every gradient is taken with ``create_graph=True``, so θ_T is a differentiable function of φ (and of θ₀), and
``dO/dφ`` of the outer loss O(θ_T) is the exact second-order hypergradient through momentum and weight decay (the
adjoint recursion of the official ``meta_backward``, done by autograd; the official port lost the weight decay there).
The real parameters are read, never written; the buffers (BatchNorm running statistics) are cloned before the first
virtual forward, so the model is left bitwise as it was, and no copy of the model is made: the cost is the unrolled
graph, one extra set of parameters per step. An activation without a second derivative in PyTorch (hardsigmoid,
in MobileNetV3) runs in an equal composite form during the unroll (``TwiceDifferentiable``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ssdistill.distributed import all_reduce_sum_nograd, world_size
from ssdistill.errors import TrainingError


class TwiceDifferentiable(TorchFunctionMode):
    """Inside it, hardsigmoid, whose second derivative PyTorch does not implement (the gate of MobileNetV3's
    squeeze-excitation), runs as its equal composite form relu6(x + 3) / 6, so that the unrolled steps differentiate
    twice through such students. The values are the same; only the graph differs."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.hardsigmoid:
            return F.relu6(args[0] + 3) / 6
        return func(*args, **(kwargs or {}))


@contextmanager
def twice_differentiable(model: nn.Module):
    """The unroll's context: ``TwiceDifferentiable`` where ``model`` holds an ``nn.Hardsigmoid`` (the mode intercepts
    every torch call, so it is used only where needed); an op PyTorch cannot differentiate twice becomes one line."""
    mode = TwiceDifferentiable() if any(isinstance(m, nn.Hardsigmoid) for m in model.modules()) else nullcontext()
    try:
        with mode:
            yield
    except RuntimeError as error:
        if "is not implemented" not in str(error):
            raise
        op = str(error).split("derivative for ")[-1].split(" is not")[0]
        raise TrainingError(
            f"the meta step differentiates twice through the students and PyTorch has no second derivative of {op}; "
            "set method.meta=false or use students without it"
        ) from None


Params = dict[str, Tensor]
Loss = Callable[[Params, Params], Tensor]
"""A loss of (parameters, buffers): the caller's closure, which runs ``torch.func.functional_call(model, (params,
buffers), inputs)``."""


class MetaStepStats(NamedTuple):
    outer_loss: float
    weighting_grad_norm: float


def _unroll(params: Params, buffers: Params, losses: Sequence[Loss], lr: float, momentum: float, weight_decay: float) -> tuple[Params, Params]:
    """One SGD-with-momentum step per loss in ``losses`` (see the module docstring), keeping the graph.

    ``torch.autograd.grad(..., create_graph=True)`` rather than ``torch.func.grad``: the result must stay an ordinary
    autograd graph that reaches φ, which the closure captures as live ``nn.Parameter``s, so that one plain
    ``autograd.grad(outer, φ)`` gives the hypergradient; ``torch.func.grad`` would differentiate only its explicit
    inputs, forcing the weighting network to be functional too and the whole unroll inside one transform.
    Parameters that do not require grad stay constant; one an objective does not use moves by its weight decay only
    (as in the official code on PyTorch 1.7, whose zeroed ``.grad`` is 0, not None; ``torch.optim.SGD`` would skip it).
    """
    params, buffers = dict(params), {n: b.clone() for n, b in buffers.items()}
    names = [n for n, p in params.items() if p.requires_grad]
    velocity: dict[str, Tensor] = {}
    for loss_fn in losses:
        loss = loss_fn(params, buffers)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True, allow_unused=True)
        for name, grad in zip(names, grads):
            theta = params[name]
            step = torch.zeros_like(theta) if grad is None else grad
            if weight_decay:
                step = step + weight_decay * theta
            if momentum and name in velocity:
                step = momentum * velocity[name] + step
            velocity[name] = step
            params[name] = theta - lr * step
    return params, buffers


def _check_names(model: nn.Module, params: Params, buffers: Params) -> None:
    """A name that is not the model's would be ignored by ``functional_call`` (the live tensor used instead)."""
    unknown = (set(params) - dict(model.named_parameters()).keys()) | (set(buffers) - dict(model.named_buffers()).keys())
    if unknown:
        raise ValueError(f"virtual_steps: {sorted(unknown)} are not parameters or buffers of the model")


def virtual_steps(
    model: nn.Module,
    params: Params,
    buffers: Params,
    inner_loss: Loss,
    steps: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> tuple[Params, Params]:
    """``steps`` virtual SGD steps of ``model`` from ``params`` on ``inner_loss(params, buffers)``; returns the virtual
    parameters θ_steps (differentiable w.r.t. whatever the loss depends on) and the updated clones of ``buffers``
    (``buffers`` themselves are untouched). The momentum buffer starts at zero, as in the official code. ``model`` is
    the module the closure calls (its names are checked: ``functional_call`` would silently use a live tensor for a
    misspelt one); it may hold more than the cohort (e.g. the embedding heads, stepped virtually as in the official)."""
    _check_names(model, params, buffers)
    with twice_differentiable(model):
        return _unroll(params, buffers, [inner_loss] * steps, lr, momentum, weight_decay)


def meta_step(
    model: nn.Module,
    weighting: nn.Module,
    weighting_optimizer: torch.optim.Optimizer,
    inner_loss: Loss,
    outer_loss: Loss,
    steps: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    outer_steps: int = 0,
) -> MetaStepStats:
    """One update of ``weighting`` by the hypergradient ``dO/dφ``.

    From the model's current parameters: ``steps`` virtual steps on ``inner_loss`` (which weights its terms with
    ``weighting``, live), then ``outer_steps`` on ``outer_loss`` (the official recipe has 1: a CE step, whose momentum
    continues that of the inner steps), then O = ``outer_loss`` at the virtual parameters. The gradient is taken w.r.t.
    the weighting network's parameters only: it is written into their ``.grad`` (replacing any) and the optimiser steps;
    the model's parameters, buffers and ``.grad`` are not touched. The model's train/eval mode is the caller's
    (the official runs the virtual steps in train mode). Returns O and ``‖dO/dφ‖`` for logging.
    """
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    phi = [p for p in weighting.parameters() if p.requires_grad]
    with twice_differentiable(model):
        after, buffers_after = _unroll(params, buffers, [inner_loss] * steps + [outer_loss] * outer_steps, lr, momentum, weight_decay)
        outer = outer_loss(after, buffers_after)
        grads = torch.autograd.grad(outer, phi, allow_unused=True)
    processes = world_size()
    for p, g in zip(phi, grads):  # under DDP every process unrolls its own batch: the hypergradient is their mean
        g = torch.zeros_like(p) if g is None else g.detach()
        p.grad = all_reduce_sum_nograd(g) / processes if processes > 1 else g
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in phi]))) if phi else 0.0
    weighting_optimizer.step()
    return MetaStepStats(float(outer.detach()), norm)
