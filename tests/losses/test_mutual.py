"""MCL's four terms (docs/methods/mcl.md) and the distillation KL (1.8) against values computed by hand on tiny inputs,
written out with scalar arithmetic independently of the masks and matrix code under test."""

import math

import pytest
import torch
from hand import kl_two, nce_row
from torch.nn import functional as F

from ssdistill.losses.distill import distill_kl
from ssdistill.losses.infonce import logits_nce, positive_first_ce, queue_logits
from ssdistill.losses.mutual import class_positive_masks, mutual_contrastive_terms
from ssdistill.losses.queue import KeyQueue


def _softplus(x):
    return math.log1p(math.exp(x))


def test_distill_kl_by_hand_with_weights_and_without_the_t_squared_factor():
    s, t = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    expected = (kl_two([0.0, 1.0], [2.0, 0.0], 2.0) + kl_two([1.0, 1.0], [0.0, 1.0], 2.0)) / 2
    assert distill_kl(s, t, 2.0).item() == pytest.approx(expected, rel=1e-6)
    assert distill_kl(s, t, 2.0, t_squared=False).item() == pytest.approx(expected / 4, rel=1e-6)
    weighted = (3 * kl_two([0.0, 1.0], [2.0, 0.0], 2.0) + 0) / 2
    assert distill_kl(s, t, 2.0, row_weights=torch.tensor([3.0, 0.0])).item() == pytest.approx(weighted, rel=1e-6)
    assert distill_kl(t, t, 5.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature must be positive"):
        distill_kl(s, t, 0.0)


def test_distill_kl_matches_torch_kl_div_and_sends_no_gradient_into_the_target():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7, requires_grad=True), torch.randn(5, 7, requires_grad=True)
    reference = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean") * 9  # the official KLDiv
    loss = distill_kl(s, t, 3.0)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_distill_kl_ignores_excluded_columns_without_nan():
    s = torch.tensor([[1.0, float("-inf"), 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, float("-inf"), 1.0]])
    loss = distill_kl(s, t, 1.0)
    assert loss.item() == pytest.approx(kl_two([0.0, 1.0], [1.0, 0.0], 1.0), rel=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()


def _label_free_logits():
    """Two networks, one image, a queue of one key per network, τ = 1:
    ℓ00 = [<q0,k0>, <q0,Q0>] = [1, 0]; ℓ01 = [<q0,k1>, <q0,Q1>] = [0.6, -1]; ℓ10 = [0, 1]; ℓ11 = [0.8, 0]."""
    q = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    k = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])]
    queues = [torch.tensor([[0.0, 1.0]]), torch.tensor([[-1.0, 0.0]])]
    return [[queue_logits(q[a], k[b], queues[b], 1.0) for b in range(2)] for a in range(2)]


def test_label_free_terms_by_hand():
    logits = _label_free_logits()
    assert logits[0][1].tolist() == [[pytest.approx(0.6), -1.0]] and logits[1][0].tolist() == [[0.0, 1.0]]
    terms = mutual_contrastive_terms(logits, lambda block, within: positive_first_ce(block), kl_temperature=3.0)
    # CE(ℓ, 0) of two columns = softplus(ℓ_1 - ℓ_0)
    assert terms["vcl"].item() == pytest.approx(_softplus(-1.0) + _softplus(-0.8), rel=1e-6)
    assert terms["icl"].item() == pytest.approx(_softplus(-1.6) + _softplus(1.0), rel=1e-6)
    soft_vcl = kl_two([0.8, 0.0], [1.0, 0.0], 3.0) + kl_two([1.0, 0.0], [0.8, 0.0], 3.0)
    soft_icl = kl_two([0.0, 1.0], [0.6, -1.0], 3.0) + kl_two([0.6, -1.0], [0.0, 1.0], 3.0)
    assert terms["soft_vcl"].item() == pytest.approx(soft_vcl, rel=1e-5)
    assert terms["soft_icl"].item() == pytest.approx(soft_icl, rel=1e-5)


def test_soft_terms_send_no_gradient_into_the_detached_side():
    """soft VCL for the pair (0, 1) is KL(ℓ00 ‖ sg ℓ11) + KL(ℓ11 ‖ sg ℓ00): the gradient reaching ℓ00 is that of the
    first KL alone (its appearance as the target of the second sends nothing), and likewise for soft ICL."""
    torch.manual_seed(1)
    logits = [[torch.randn(4, 6, requires_grad=True) for _ in range(2)] for _ in range(2)]
    terms = mutual_contrastive_terms(logits, lambda block, within: positive_first_ce(block), 2.0)
    got_vcl = torch.autograd.grad(terms["soft_vcl"], logits[0][0], retain_graph=True)[0]
    want_vcl = torch.autograd.grad(distill_kl(logits[0][0], logits[1][1], 2.0), logits[0][0])[0]
    assert torch.allclose(got_vcl, want_vcl, atol=1e-7)
    got_icl = torch.autograd.grad(terms["soft_icl"], logits[1][0], retain_graph=True)[0]
    want_icl = torch.autograd.grad(distill_kl(logits[1][0], logits[0][1], 2.0), logits[1][0])[0]
    assert torch.allclose(got_icl, want_icl, atol=1e-7)
    # the vanilla and interactive contrastive terms only involve their own blocks
    assert torch.autograd.grad(terms["vcl"], logits[0][1], allow_unused=True)[0] is None


def test_three_networks_sum_over_every_ordered_pair():
    torch.manual_seed(2)
    logits = [[torch.randn(3, 5) for _ in range(3)] for _ in range(3)]
    terms = mutual_contrastive_terms(logits, lambda block, within: positive_first_ce(block), 3.0)
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    assert terms["icl"].item() == pytest.approx(sum(positive_first_ce(logits[a][b]).item() for a, b in pairs), rel=1e-6)
    assert terms["soft_icl"].item() == pytest.approx(sum(distill_kl(logits[a][b], logits[b][a], 3.0).item() for a, b in pairs), rel=1e-6)
    with pytest.raises(ValueError, match="M x M grid"):
        mutual_contrastive_terms([[logits[0][0]]], positive_first_ce, 3.0)


def _embeddings():
    """Two networks, three images of classes [0, 0, 1], unit 2-d embeddings given by their angles."""
    angles = [[0.0, 0.3, 2.0], [0.1, 0.5, 2.5]]
    return [torch.tensor([[math.cos(a), math.sin(a)] for a in row]) for row in angles], angles


def _supervised_row(anchor_angles, contrast_angles, i, positives, excluded, tau):
    return nce_row(anchor_angles[i], contrast_angles, positives, excluded, tau)


@pytest.mark.parametrize("include_self_pair", [False, True])
def test_supervised_terms_by_hand(include_self_pair):
    (v0, v1), angles = _embeddings()
    labels = torch.tensor([0, 0, 1])
    tau = 0.5
    logits = [[a @ b.T / tau for b in (v0, v1)] for a in (v0, v1)]
    within, across, diagonal = class_positive_masks(labels, include_self_pair)

    def contrastive(block, same):
        if same:
            return logits_nce(block, within, exclude=diagonal).loss
        return logits_nce(block, across, exclude=None if include_self_pair else diagonal).loss

    terms = mutual_contrastive_terms(logits, contrastive, 3.0)
    # image 2 is the only one of its class: no positive, left out of the mean (never NaN) unless the self pair counts
    vcl = sum(
        (_supervised_row(angles[m], angles[m], 0, [1], {0}, tau) + _supervised_row(angles[m], angles[m], 1, [0], {1}, tau)) / 2 for m in range(2)
    )
    assert terms["vcl"].item() == pytest.approx(vcl, rel=1e-5)
    icl = 0.0
    for a, b in ((0, 1), (1, 0)):
        if include_self_pair:  # the same image in the other network is a positive, nothing is excluded
            rows = [
                _supervised_row(angles[a], angles[b], 0, [0, 1], set(), tau),
                _supervised_row(angles[a], angles[b], 1, [0, 1], set(), tau),
                _supervised_row(angles[a], angles[b], 2, [2], set(), tau),
            ]
        else:
            rows = [_supervised_row(angles[a], angles[b], 0, [1], {0}, tau), _supervised_row(angles[a], angles[b], 1, [0], {1}, tau)]
        icl += sum(rows) / len(rows)
    assert terms["icl"].item() == pytest.approx(icl, rel=1e-5)

    # soft terms: KL_T over full rows of the in-batch similarities, the diagonal included (no mask), written out here
    def row(anchor, contrast, i):
        return [math.cos(angles[anchor][i] - c) / tau for c in angles[contrast]]

    def kl_rows(student, target, temperature=3.0):
        p_t = [math.exp(x / temperature) for x in target]
        p_s = [math.exp(x / temperature) for x in student]
        p_t, p_s = [x / sum(p_t) for x in p_t], [x / sum(p_s) for x in p_s]
        return temperature**2 * sum(t * math.log(t / s) for t, s in zip(p_t, p_s))

    soft_vcl = sum(kl_rows(row(a, a, i), row(b, b, i)) for a, b in ((0, 1), (1, 0)) for i in range(3)) / 3
    soft_icl = sum(kl_rows(row(a, b, i), row(b, a, i)) for a, b in ((0, 1), (1, 0)) for i in range(3)) / 3
    assert terms["soft_vcl"].item() == pytest.approx(soft_vcl, rel=1e-5)
    assert terms["soft_icl"].item() == pytest.approx(soft_icl, rel=1e-5)
    assert torch.isfinite(torch.stack(list(terms.values()))).all()


def test_the_self_pair_switch_changes_exactly_the_diagonal():
    labels = torch.tensor([3, 1, 3, 2, 1])
    within_off, across_off, eye = class_positive_masks(labels, include_self_pair=False)
    within_on, across_on, _ = class_positive_masks(labels, include_self_pair=True)
    assert torch.equal(within_on, within_off) and torch.equal(across_off, within_off)
    assert torch.equal(across_on - across_off, torch.eye(5)) and torch.equal(eye, torch.eye(5, dtype=torch.bool))
    assert within_off.tolist()[0] == [0, 0, 1, 0, 0]


def test_cohort_queues_stay_column_aligned_after_wrap_around():
    """Column j of every member's queue holds that member's key of the same image, after the write pointer wraps."""
    queue = KeyQueue(size=5, dim=3, members=2)
    key = lambda image, member: F.normalize(torch.tensor([float(image), float(member) + 1.0, 1.0]), dim=0)  # noqa: E731
    for step in range(4):  # 4 steps of 3 images: wraps twice
        ids = torch.arange(step * 3, step * 3 + 3)
        queue.enqueue(torch.stack([torch.stack([key(i, m) for m in range(2)]) for i in ids.tolist()]), ids)
    assert int(queue.pointer) == 12 % 5 and sorted(queue.ids.tolist()) == [7, 8, 9, 10, 11]
    for column, image in enumerate(queue.ids.tolist()):
        for member in range(2):
            assert torch.allclose(queue.member_keys(member)[column], key(image, member))
    with pytest.raises(ValueError, match="2x3-d per image"):
        queue.enqueue(torch.zeros(2, 3), torch.arange(2))
    with pytest.raises(ValueError, match="cohort queue"):
        KeyQueue(5, 3).member_keys(0)
