"""Layer-wise MCL (losses/layerwise.py): the pair weights, the weighted terms and the aggregator against values computed
by hand on tiny inputs, and ω ≡ 1 with one stage per network against the existing MCL terms (losses/mutual.py) built
the way methods/mcl.py builds them, with the official code's counting factor."""

import math
import re

import pytest
import torch
from hand import nce_row
from torch.nn import functional as F

from ssdistill.losses.infonce import logits_nce
from ssdistill.losses.layerwise import aggregate_logits, aggregation_loss, layerwise_mutual_terms, pair_weights, stage_pairs
from ssdistill.losses.mutual import class_positive_masks, mutual_contrastive_terms


def _at(angles, scale=1.0):
    return torch.tensor([[scale * math.cos(a), scale * math.sin(a)] for a in angles])


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _kl_rows(student, target, temperature):
    """T² · KL(softmax(target / T) ‖ softmax(student / T)) of one row, written out."""
    p_t = [math.exp(x / temperature) for x in target]
    p_s = [math.exp(x / temperature) for x in student]
    p_t, p_s = [x / sum(p_t) for x in p_t], [x / sum(p_s) for x in p_s]
    return temperature**2 * sum(t * math.log(t / s) for t, s in zip(p_t, p_s))


def test_pair_weights_by_hand_in_the_official_order():
    """ω = sigmoid(cos) of the projected features per sample, whatever their lengths; ordered pairs of different networks."""
    a0, a1, b0 = [0.0, 1.0, 2.0], [0.5, 0.5, 3.0], [0.2, 2.0, -1.0]
    projected = {("a", 0): _at(a0, 2.0), ("a", 1): _at(a1, 0.5), ("b", 0): _at(b0, 3.0)}
    weights = pair_weights(projected)
    assert list(weights) == [("a", 0, "b", 0), ("a", 1, "b", 0), ("b", 0, "a", 0), ("b", 0, "a", 1)]
    for stage, angles in ((0, a0), (1, a1)):
        want = [_sigmoid(math.cos(x - y)) for x, y in zip(angles, b0)]
        assert weights[("a", stage, "b", 0)].tolist() == pytest.approx(want, rel=1e-6)
    assert torch.equal(weights[("a", 1, "b", 0)], weights[("b", 0, "a", 1)])
    assert all(((w > 0.26) & (w < 0.74)).all() for w in weights.values())


def test_pair_weights_are_differentiable_in_the_projections_unless_computed_without_grad():
    projected = {(n, 0): torch.randn(3, 4, requires_grad=True) for n in range(2)}
    weights = pair_weights(projected)
    weights[(0, 0, 1, 0)].sum().backward()
    assert projected[(0, 0)].grad is not None and projected[(0, 0)].grad.abs().sum() > 0
    with torch.no_grad():
        assert not any(w.requires_grad for w in pair_weights(projected).values())


def _two_networks():
    """Two networks, one stage each, three images of classes [0, 0, 1], unit 2-d embeddings given by their angles."""
    angles = [[0.0, 0.3, 2.0], [0.1, 0.5, 2.5]]
    return {(m, 0): _at(row) for m, row in enumerate(angles)}, angles


def test_weighted_terms_by_hand():
    """Each ordered pair is symmetric, so the official sum of pair (0→1) with ω01 and pair (1→0) with ω10 weights row n
    of every block by ω01_n + ω10_n; image 2 has no class partner: 0 in the contrastive terms, still counted in 1/B."""
    embeddings, angles = _two_networks()
    w01, w10 = [0.3, 0.6, 0.7], [0.5, 0.2, 0.4]
    weights = {(0, 0, 1, 0): torch.tensor(w01), (1, 0, 0, 0): torch.tensor(w10)}
    tau, t = 0.5, 3.0
    terms = layerwise_mutual_terms(embeddings, weights, temperature=tau, kl_temperature=t, labels=torch.tensor([0, 0, 1]))
    omega = [x + y for x, y in zip(w01, w10)]
    # vanilla rows: positive = the other image of the class, self out of the denominator
    vcl = sum(omega[i] * nce_row(angles[m][i], angles[m], [1 - i], {i}, tau) for m in range(2) for i in range(2)) / 3
    assert terms["vcl"].item() == pytest.approx(vcl, rel=1e-5)
    # interactive rows: anchors of one network, contrast of the other, the same image out of positives and denominator
    icl = sum(omega[i] * nce_row(angles[a][i], angles[1 - a], [1 - i], {i}, tau) for a in range(2) for i in range(2)) / 3
    assert terms["icl"].item() == pytest.approx(icl, rel=1e-5)

    def row(anchor, contrast, i):
        return [math.cos(angles[anchor][i] - c) / tau for c in angles[contrast]]

    # soft terms: full rows, diagonal kept, each KL row weighted, all three rows counted
    soft_vcl = sum(omega[i] * _kl_rows(row(a, a, i), row(1 - a, 1 - a, i), t) for a in range(2) for i in range(3)) / 3
    soft_icl = sum(omega[i] * _kl_rows(row(a, 1 - a, i), row(1 - a, a, i), t) for a in range(2) for i in range(3)) / 3
    assert terms["soft_vcl"].item() == pytest.approx(soft_vcl, rel=1e-5)
    assert terms["soft_icl"].item() == pytest.approx(soft_icl, rel=1e-5)


def test_label_free_terms_by_hand():
    """Keys = the other view: row n's positive is key n, every other key (an appended queue row too) a negative."""
    views = [[0.0, 1.5], [0.4, 2.0]]
    keys_at = [[0.2, 1.0, 3.0], [0.6, 1.7, -2.0]]  # two batch keys, then one aligned queue key per node
    embeddings = {(m, 0): _at(views[m]) for m in range(2)}
    keys = {(m, 0): _at(keys_at[m]) for m in range(2)}
    tau, t = 0.2, 2.0
    terms = layerwise_mutual_terms(embeddings, None, temperature=tau, kl_temperature=t, keys=keys, pair_count="unordered")
    vcl = sum(nce_row(views[m][i], keys_at[m], [i], set(), tau) for m in range(2) for i in range(2)) / 2
    icl = sum(nce_row(views[a][i], keys_at[1 - a], [i], set(), tau) for a in range(2) for i in range(2)) / 2
    assert terms["vcl"].item() == pytest.approx(vcl, rel=1e-5) and terms["icl"].item() == pytest.approx(icl, rel=1e-5)

    def row(anchor, contrast, i):
        return [math.cos(views[anchor][i] - c) / tau for c in keys_at[contrast]]

    soft_vcl = sum(_kl_rows(row(a, a, i), row(1 - a, 1 - a, i), t) for a in range(2) for i in range(2)) / 2
    soft_icl = sum(_kl_rows(row(a, 1 - a, i), row(1 - a, a, i), t) for a in range(2) for i in range(2)) / 2
    assert terms["soft_vcl"].item() == pytest.approx(soft_vcl, rel=1e-5)
    assert terms["soft_icl"].item() == pytest.approx(soft_icl, rel=1e-5)


def _mcl_supervised_terms(members, labels, tau, kl_temperature, include_self_pair):
    """The MCL terms exactly as methods/mcl.py's supervised_terms builds them."""
    logits = [[(a.float() @ b.float().T) / tau for b in members] for a in members]
    within, across, diagonal = class_positive_masks(labels, include_self_pair)

    def contrastive(block, same_network):
        if same_network:
            return logits_nce(block, within, exclude=diagonal).loss
        return logits_nce(block, across, exclude=None if include_self_pair else diagonal).loss

    return mutual_contrastive_terms(logits, contrastive, kl_temperature)


def _unit(*shape, seed):
    torch.manual_seed(seed)
    return F.normalize(torch.randn(*shape), dim=-1)


@pytest.mark.parametrize("include_self_pair", [False, True])
def test_uniform_weights_and_one_stage_reduce_to_mcl_with_the_official_counting_factor(include_self_pair):
    """M = 2, S = 1, ω ≡ 1: official (ordered pairs) = 2 × every MCL term, unordered = the MCL terms; the gradients
    reaching the embeddings (detach points included) are those of MCL too."""
    members = [v.clone().requires_grad_() for v in _unit(2, 4, 5, seed=0)]
    labels = torch.tensor([0, 1, 0, 1])
    mcl = _mcl_supervised_terms(members, labels, 0.1, 3.0, include_self_pair)
    embeddings = {(m, "final"): v for m, v in enumerate(members)}
    common = {"temperature": 0.1, "kl_temperature": 3.0, "labels": labels, "include_self_pair": include_self_pair}
    official = layerwise_mutual_terms(embeddings, None, **common)
    ones = {pair: torch.ones(4) for pair in [(0, "final", 1, "final"), (1, "final", 0, "final")]}
    explicit = layerwise_mutual_terms(embeddings, ones, **common)
    unordered = layerwise_mutual_terms(embeddings, None, pair_count="unordered", **common)
    for name, value in mcl.items():
        assert torch.allclose(official[name], 2 * value, atol=1e-6), name
        assert torch.allclose(explicit[name], official[name], atol=1e-6), name
        assert torch.allclose(unordered[name], value, atol=1e-6), name
        got = torch.autograd.grad(unordered[name], members, retain_graph=True)
        want = torch.autograd.grad(value, members, retain_graph=True)
        assert all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want)), name


def test_three_networks_count_vanilla_terms_2_m_minus_1_times():
    members = list(_unit(3, 4, 5, seed=1))
    labels = torch.tensor([2, 2, 7, 7])
    mcl = _mcl_supervised_terms(members, labels, 0.2, 3.0, False)
    terms = layerwise_mutual_terms({(m, 0): v for m, v in enumerate(members)}, None, temperature=0.2, kl_temperature=3.0, labels=labels)
    factors = {"vcl": 2 * (3 - 1), "icl": 2, "soft_vcl": 2, "soft_icl": 2}
    for name, value in mcl.items():
        assert torch.allclose(terms[name], factors[name] * value, atol=1e-6), name


def test_heterogeneous_stage_counts_give_every_stage_pair():
    """Network r has 3 stages, m has 2: 3·2 = 6 pairs each way; each node's vanilla term is counted 2 × (the other
    network's stage count) times with ω ≡ 1."""
    vectors = _unit(5, 4, 6, seed=2)
    nodes = [("r", 0), ("r", 1), ("r", 2), ("m", 0), ("m", 1)]
    embeddings = dict(zip(nodes, vectors))
    assert len(stage_pairs(nodes)) == 12 and len(stage_pairs(nodes, "unordered")) == 6
    assert stage_pairs(nodes)[:3] == [(("r", 0), ("m", 0)), (("r", 0), ("m", 1)), (("r", 1), ("m", 0))]
    weights = pair_weights({node: torch.randn(4, 3) for node in nodes})
    assert len(weights) == 12 and all(a != b for a, _, b, _ in weights)
    labels = torch.tensor([0, 0, 1, 1])
    terms = layerwise_mutual_terms(embeddings, weights, temperature=0.1, kl_temperature=3.0, labels=labels)
    assert all(torch.isfinite(v) for v in terms.values())
    within, _, eye = class_positive_masks(labels, False)
    uniform = layerwise_mutual_terms(embeddings, None, temperature=0.1, kl_temperature=3.0, labels=labels)
    vanilla = {node: logits_nce(v @ v.T / 0.1, within, exclude=eye).loss for node, v in embeddings.items()}
    want = sum((2 * 2 if network == "r" else 2 * 3) * vanilla[(network, stage)] for network, stage in nodes)
    assert torch.allclose(uniform["vcl"], want, atol=1e-5)


def test_gradient_reaches_the_embeddings_and_reaches_the_weights_only_when_the_caller_keeps_their_graph():
    """ω is used as given: with its graph (the meta step's virtual steps) dVCL/dω_n = (ℓ_n(S_a) + ℓ_n(S_b)) / B;
    detached (the real step) only the embeddings receive gradient."""
    v0, v1 = (v.clone().requires_grad_() for v in _unit(2, 4, 3, seed=3))
    embeddings = {(0, 0): v0, (1, 0): v1}
    labels = torch.tensor([0, 1, 1, 0])
    omega = {(0, 0, 1, 0): torch.full((4,), 0.5, requires_grad=True), (1, 0, 0, 0): torch.full((4,), 0.6, requires_grad=True)}
    terms = layerwise_mutual_terms(embeddings, omega, temperature=0.1, kl_temperature=3.0, labels=labels)
    grads = torch.autograd.grad(terms["vcl"], [v0, v1, omega[(0, 0, 1, 0)]])
    assert all(g.abs().sum() > 0 for g in grads)
    within, _, eye = class_positive_masks(labels, False)
    per_row = []
    for v in (v0.detach(), v1.detach()):
        s = v @ v.T / 0.1
        log_prob = s - torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=1, keepdim=True)
        per_row.append(-(within * log_prob).sum(1) / within.sum(1))
    assert torch.allclose(grads[2], (per_row[0] + per_row[1]) / 4, atol=1e-6)

    constant = {pair: w.detach() for pair, w in omega.items()}
    total = sum(layerwise_mutual_terms(embeddings, constant, temperature=0.1, kl_temperature=3.0, labels=labels).values())
    total.backward()
    assert v0.grad.abs().sum() > 0 and v1.grad.abs().sum() > 0
    assert all(w.grad is None for w in omega.values())


def test_aggregate_logits_and_aggregation_loss_by_hand():
    """Stage weights softmax([0, ln 3]) = [1/4, 3/4] and softmax([0, 0]) = [1/2, 1/2]."""
    z0 = torch.tensor([[4.0, 0.0], [2.0, 2.0]], requires_grad=True)
    z1 = torch.tensor([[0.0, 4.0], [0.0, -2.0]], requires_grad=True)
    scores = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)
    agg = aggregate_logits([z0, z1], scores)
    assert torch.allclose(agg, torch.tensor([[1.0, 3.0], [1.0, 0.0]]), atol=1e-6)

    labels = torch.tensor([1, 0])
    other = {"b": [torch.tensor([[0.0, 1.0], [1.0, 0.0]])]}  # a second network with a single stage

    def softplus(x):
        return math.log1p(math.exp(x))

    b_agg = aggregate_logits(other["b"], torch.zeros(2, 1))
    loss = aggregation_loss({"a": [z0, z1], **other}, {"a": agg, "b": b_agg}, labels, 3.0)
    # CE of two classes = softplus(z_other - z_label); per stage: a/0, a/1, b/0, each the mean of its two rows
    ce = (softplus(4.0) + softplus(0.0)) / 2 + (softplus(-4.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(-1.0)) / 2
    assert loss["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert loss["aggregate_ce"].item() == pytest.approx((softplus(-2.0) + softplus(-1.0)) / 2 + (softplus(-1.0) * 2) / 2, rel=1e-6)
    finals, aggs = {"a": [[0.0, 4.0], [0.0, -2.0]], "b": [[0.0, 1.0], [1.0, 0.0]]}, {"a": [[1.0, 3.0], [1.0, 0.0]], "b": [[0.0, 1.0], [1.0, 0.0]]}
    kd = sum(_kl_rows(finals[a][i], aggs[b][i], 3.0) for a in finals for b in aggs for i in range(2)) / 2
    assert loss["logit_kd"].item() == pytest.approx(kd, rel=1e-5)
    # the KD target is detached: the aggregator's scores receive gradient from the aggregate CE only
    assert torch.autograd.grad(loss["logit_kd"], scores, allow_unused=True)[0] is None
    assert torch.autograd.grad(loss["aggregate_ce"], scores)[0].abs().sum() > 0


def _supervised(embeddings, weights, labels=None, **kwargs):
    labels = torch.tensor([0, 0, 1, 1]) if labels is None else labels
    return layerwise_mutual_terms(embeddings, weights, temperature=0.1, kl_temperature=3.0, labels=labels, **kwargs)


BAD = [
    (
        lambda e: _supervised(e, {(0, 5, 1, 0): torch.ones(4)}),
        "a pair weight for (0, 5, 1, 0) but no embeddings of (network, stage) (0, 5)",
    ),
    (
        lambda e: _supervised(e, {(0, 0, 1, 0): torch.ones(3), (1, 0, 0, 0): torch.ones(4)}),
        "the pair weight for (0, 0, 1, 0) must be [B] = [4], got [3]",
    ),
    (
        lambda e: _supervised(e, {(0, 0, 1, 0): torch.ones(4)}),
        "no pair weight for (1, 0, 0, 0): give one for every pair of stages of different networks (pair_weights)",
    ),
    (
        lambda e: _supervised({**e, (2, 0): torch.ones(3, 2)}, None),
        "embeddings must all be [B, D] with the same B and D, got [(3, 2), (4, 2)]",
    ),
    (lambda e: _supervised({(0, 0): e[(0, 0)], (0, 1): e[(1, 0)]}, None), "embeddings need stages of at least two networks, got networks [0]"),
    (lambda e: _supervised(e, None, labels=torch.tensor([0, 0, 1])), "labels must be [B] = [4], got [3]"),
    (
        lambda e: layerwise_mutual_terms(e, None, temperature=0.1, kl_temperature=3.0),
        "give labels (supervised, in-batch positives) or keys (label-free, the other view's embeddings), exactly one",
    ),
    (
        lambda e: layerwise_mutual_terms(e, None, temperature=0.1, kl_temperature=3.0, keys={n: v[:2] for n, v in e.items()}),
        "keys must all be [C, D] with C >= B = 4 and D = 2, got [(2, 2)]",
    ),
    (lambda e: _supervised(e, None, pair_count="all"), "unknown pair_count 'all' (official, unordered)"),
    (
        lambda e: aggregate_logits([e[(0, 0)], e[(1, 0)]], torch.zeros(4, 3)),
        "stage scores must be [B, S] = [B, 2] for 2 stage logits, got [4, 3]",
    ),
]


@pytest.mark.parametrize("call, message", BAD, ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_inputs_raise_one_line_value_errors(call, message):
    embeddings = {(0, 0): _unit(4, 2, seed=4), (1, 0): _unit(4, 2, seed=5)}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        call(embeddings)
    assert "\n" not in message


def test_a_weight_within_one_network_is_refused():
    embeddings = {(0, 0): _unit(4, 2, seed=4), (0, 1): _unit(4, 2, seed=6), (1, 0): _unit(4, 2, seed=5)}
    message = "a pair weight for (0, 0, 0, 1) pairs network 0 with itself; only different networks are contrasted"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _supervised(embeddings, {(0, 0, 0, 1): torch.ones(4)})


def test_the_terms_differentiate_under_torch_func_as_the_meta_step_needs():
    """torch.func.grad through the terms (embeddings and ω both differentiable) agrees with autograd."""
    v0, v1 = _unit(2, 4, 3, seed=7)
    labels = torch.tensor([0, 1, 0, 1])
    w01, w10 = torch.rand(4), torch.rand(4)

    def total(a, b, omega01, omega10):
        weights = {(0, 0, 1, 0): omega01, (1, 0, 0, 0): omega10}
        return sum(layerwise_mutual_terms({(0, 0): a, (1, 0): b}, weights, temperature=0.1, kl_temperature=3.0, labels=labels).values())

    functional = torch.func.grad(total, argnums=(0, 1, 2, 3))(v0, v1, w01, w10)
    leaves = [x.clone().requires_grad_() for x in (v0, v1, w01, w10)]
    reference = torch.autograd.grad(total(*leaves), leaves)
    assert all(torch.allclose(f, r, atol=1e-6) for f, r in zip(functional, reference))
