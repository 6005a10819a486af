"""The meta step (engine/meta.py): virtual steps equal real SGD, the cohort is left bitwise, and the hypergradient into
the weighting network is the exact second-order derivative (finite differences, float64)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ssdistill.engine.meta import meta_step, virtual_steps
from ssdistill.errors import TrainingError

LR, MOMENTUM, WD = 0.1, 0.9, 0.05


class Pair(nn.Module):
    """A cohort of two small MLPs with BatchNorm."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
        self.b = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x):
        return self.a(x), self.b(x)


def setup():
    torch.manual_seed(0)
    cohort, weighting = Pair().double().train(), nn.Linear(6, 1).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    return cohort, weighting, x, y


def objectives(cohort, weighting, x, y):
    """Inner: per-sample terms weighted by ω = sigmoid(weighting(logits)), ω a function of θ as in the official code;
    outer: the unweighted CE of both members."""

    def inner(params, buffers):
        la, lb = functional_call(cohort, (params, buffers), (x,))
        omega = torch.sigmoid(weighting(torch.cat([la, lb], 1))).squeeze(1)
        per_sample = F.cross_entropy(la, y, reduction="none") + F.cross_entropy(lb, y, reduction="none") + ((la - lb) ** 2).sum(1)
        return (omega * per_sample).mean()

    def outer(params, buffers):
        la, lb = functional_call(cohort, (params, buffers), (x,))
        return F.cross_entropy(la, y) + F.cross_entropy(lb, y)

    return inner, outer


def run_meta(cohort, weighting, x, y, weight_decay=WD, steps=2, outer_steps=1):
    inner, outer = objectives(cohort, weighting, x, y)
    opt = torch.optim.SGD(weighting.parameters(), lr=0.5)
    return meta_step(cohort, weighting, opt, inner, outer, steps, LR, MOMENTUM, weight_decay, outer_steps)


def test_the_cohort_is_left_bitwise_params_buffers_and_grads():
    cohort, weighting, x, y = setup()
    cohort.a[0].weight.grad = torch.full_like(cohort.a[0].weight, 0.25)
    state = {n: t.clone() for n, t in cohort.state_dict().items()}
    assert "a.1.num_batches_tracked" in state and "b.1.running_var" in state
    stats = run_meta(cohort, weighting, x, y)
    assert all(torch.equal(t, state[n]) for n, t in cohort.state_dict().items())
    assert torch.equal(cohort.a[0].weight.grad, torch.full_like(cohort.a[0].weight, 0.25))
    assert all(p.grad is None for n, p in cohort.named_parameters() if n != "a.0.weight")
    assert cohort.training and stats.outer_loss > 0


def test_only_the_weighting_network_changes():
    cohort, weighting, x, y = setup()
    before = [p.detach().clone() for p in weighting.parameters()]
    run_meta(cohort, weighting, x, y)
    assert all(not torch.equal(p, b) for p, b in zip(weighting.parameters(), before))


def test_virtual_steps_update_cloned_buffers_only():
    cohort, weighting, x, y = setup()
    inner, _ = objectives(cohort, weighting, x, y)
    buffers = dict(cohort.named_buffers())
    state = {n: b.clone() for n, b in buffers.items()}
    params = dict(cohort.named_parameters())
    after, buffers_after = virtual_steps(cohort, params, buffers, inner, 3, LR, MOMENTUM, WD)
    assert all(torch.equal(b, state[n]) for n, b in cohort.named_buffers())
    assert int(buffers_after["a.1.num_batches_tracked"]) == int(state["a.1.num_batches_tracked"]) + 3
    assert not torch.equal(buffers_after["b.1.running_mean"], state["b.1.running_mean"])
    assert all(not torch.equal(after[n], p) for n, p in params.items())
    assert all(not p.requires_grad or p.grad is None for p in cohort.parameters())


def reference_outer(cohort, weighting, x, y, weight_decay=WD):
    """O(φ) computed independently: torch.optim.SGD on a deep copy of the cohort, 2 inner steps + 1 outer step."""
    model = copy.deepcopy(cohort)
    inner, outer = objectives(model, weighting, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=weight_decay)
    for loss_fn in (inner, inner, outer):
        opt.zero_grad()
        loss_fn(dict(model.named_parameters()), dict(model.named_buffers())).backward()
        opt.step()
    with torch.no_grad():
        return float(outer(dict(model.named_parameters()), dict(model.named_buffers())))


def test_the_hypergradient_is_the_exact_second_order_derivative():
    cohort, weighting, x, y = setup()
    probe = copy.deepcopy(weighting)
    stats = run_meta(cohort, weighting, x, y)
    grads = [p.grad for p in weighting.parameters()]
    assert stats.outer_loss == pytest.approx(reference_outer(cohort, probe, x, y), rel=1e-12)
    h, estimates = 1e-6, []
    for p in probe.parameters():
        estimate = torch.zeros_like(p)
        for i in range(p.numel()):
            with torch.no_grad():
                p.view(-1)[i] += h
            up = reference_outer(cohort, probe, x, y)
            with torch.no_grad():
                p.view(-1)[i] -= 2 * h
            down = reference_outer(cohort, probe, x, y)
            with torch.no_grad():
                p.view(-1)[i] += h
            estimate.view(-1)[i] = (up - down) / (2 * h)
        estimates.append(estimate)
    for g, e in zip(grads, estimates):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-9)
    norm = torch.cat([g.flatten() for g in grads]).norm()
    assert norm > 1e-3 and stats.weighting_grad_norm == pytest.approx(float(norm))


def test_the_weight_decay_is_in_the_hypergradient():
    cohort, weighting, x, y = setup()
    other = copy.deepcopy(weighting)
    run_meta(cohort, weighting, x, y, weight_decay=WD)
    run_meta(cohort, other, x, y, weight_decay=0.0)
    difference = max(float((p.grad - q.grad).abs().max()) for p, q in zip(weighting.parameters(), other.parameters()))
    assert difference > 1e-6


def hand_grads(W, b, x, y):
    """∇ of mean((xWᵀ + b − y)²) by hand."""
    r = 2 * (x @ W.T + b - y) / y.numel()
    return r.T @ x, r.sum(0)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
def test_virtual_steps_are_hand_computed_sgd(momentum, weight_decay):
    torch.manual_seed(1)
    lin = nn.Linear(3, 2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)

    def mse(params, buffers):
        return ((functional_call(lin, (params, buffers), (x,)) - y) ** 2).mean()

    W0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    one, _ = virtual_steps(lin, dict(lin.named_parameters()), {}, mse, 1, LR, momentum, weight_decay)
    gW, gb = hand_grads(W0, b0, x, y)
    dW, db = gW + weight_decay * W0, gb + weight_decay * b0  # the first step is plain SGD: the buffer starts at zero
    W1, b1 = W0 - LR * dW, b0 - LR * db
    torch.testing.assert_close(one["weight"], W1, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(one["bias"], b1, rtol=1e-12, atol=1e-14)

    two, _ = virtual_steps(lin, dict(lin.named_parameters()), {}, mse, 2, LR, momentum, weight_decay)
    gW, gb = hand_grads(W1, b1, x, y)
    dW, db = momentum * dW + gW + weight_decay * W1, momentum * db + gb + weight_decay * b1
    torch.testing.assert_close(two["weight"], W1 - LR * dW, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(two["bias"], b1 - LR * db, rtol=1e-12, atol=1e-14)

    real = copy.deepcopy(lin)
    opt = torch.optim.SGD(real.parameters(), lr=LR, momentum=momentum, weight_decay=weight_decay)
    for _ in range(2):
        opt.zero_grad()
        mse(dict(real.named_parameters()), {}).backward()
        opt.step()
    torch.testing.assert_close(two["weight"], real.weight.detach(), rtol=1e-12, atol=1e-14)
    assert torch.equal(lin.weight, W0) and torch.equal(lin.bias, b0)


def test_no_copy_of_the_model_is_made(monkeypatch):
    cohort, weighting, x, y = setup()

    def refuse(*args, **kwargs):
        raise AssertionError("the meta step copied the model")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    monkeypatch.setattr(nn.Module, "state_dict", refuse)
    monkeypatch.setattr(nn.Module, "load_state_dict", refuse)
    assert run_meta(cohort, weighting, x, y).weighting_grad_norm > 0


def test_a_name_the_model_does_not_have_is_refused():
    lin = nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"virtual_steps: \['wieght'\] are not parameters or buffers of the model"):
        virtual_steps(lin, {"wieght": lin.weight}, {}, lambda p, b: p["wieght"].sum(), 1, LR)


class _Relu6Sigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3) / 6


def test_mobilenet_activations_differentiate_twice_and_give_the_hypergradient_of_their_composite_forms():
    """PyTorch has no second derivative of hardsigmoid (MobileNetV3's SE gate): the meta step runs it as its equal relu6
    form, so its hypergradient is that of a cohort built with the composite form (hardswish has one, and stays)."""
    torch.manual_seed(0)
    hard = Pair().double().train()
    hard.a[2], hard.b[2] = nn.Hardswish(), nn.Hardsigmoid()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(RuntimeError, match="hardsigmoid_backward is not implemented"):
        torch.autograd.grad(torch.autograd.grad(hard(x)[1].sum(), hard.b[0].weight, create_graph=True)[0].sum(), hard.b[0].weight)
    composite = copy.deepcopy(hard)
    composite.b[2] = _Relu6Sigmoid()
    grads = []
    for cohort in (hard, composite):
        torch.manual_seed(1)
        weighting = nn.Linear(6, 1).double()
        run_meta(cohort, weighting, x, y)
        grads.append([p.grad.clone() for p in weighting.parameters()])
    assert all(g.abs().sum() > 0 for g in grads[0])
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(*grads))


def test_an_op_without_a_second_derivative_is_one_line_that_says_what_to_do():
    class FunctionalGate(nn.Module):  # F.hardsigmoid without an nn.Hardsigmoid module: the mode is not switched on
        def forward(self, x):
            return F.hardsigmoid(x)

    torch.manual_seed(0)
    cohort = Pair().double().train()
    cohort.b[2] = FunctionalGate()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(TrainingError, match=r"no second derivative of aten::hardsigmoid_backward; set method.meta=false") as caught:
        run_meta(cohort, nn.Linear(6, 1).double(), x, y)
    assert "\n" not in str(caught.value)
