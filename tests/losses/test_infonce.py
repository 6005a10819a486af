import math

import pytest
import torch
from torch.nn import functional as F

from ssdistill.losses.infonce import batch_similarity_distribution_loss, info_nce, queue_nce, similarity_distribution_loss
from ssdistill.losses.queue import KeyQueue, capped_queue_size


def test_info_nce_single_positive_by_hand():
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0, 0.0]])
    # s = [2, 0, -2] at tau 0.5: loss = -(2 - log(e^2 + 1 + e^-2))
    expected = -(2.0 - math.log(math.exp(2) + 1 + math.exp(-2)))
    assert info_nce(u, v, w, 0.5).loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_multi_positive_exclusion_and_skipped_rows():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    w = torch.tensor([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0]])  # row 1 has no positive: skipped, not NaN
    e = torch.tensor([[False, True, False], [False, False, False]])  # column 1 leaves row 0's denominator
    result = info_nce(u, v, w, 1.0, exclude=e)
    log_z = math.log(math.exp(1.0) + math.exp(0.6))
    expected = -(1 * (1.0 - log_z) + 3 * (0.6 - log_z)) / 4
    assert result.loss.item() == pytest.approx(expected, rel=1e-6) and result.skipped_rows == 1
    weighted = info_nce(u, v, w, 1.0, exclude=e, anchor_weights=torch.tensor([2.0, 1.0]), reduction="weighted")
    assert weighted.loss.item() == pytest.approx(2 * expected / 2, rel=1e-6)
    with pytest.raises(ValueError, match="share D"):
        info_nce(u, torch.zeros(3, 5), w, 1.0)


def test_queue_nce_equals_the_general_form_and_cross_entropy():
    torch.manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 8), dim=1) for n in (4, 4, 10))
    fast = queue_nce(q, k, queue, 0.2)
    contrast = torch.cat([k, queue])
    weights = torch.zeros(4, 14)
    weights[torch.arange(4), torch.arange(4)] = 1
    exclude = torch.zeros(4, 14, dtype=torch.bool)
    exclude[:, :4] = True
    exclude[torch.arange(4), torch.arange(4)] = False  # each row sees its own key and the queue only
    assert fast.item() == pytest.approx(info_nce(q, contrast, weights, 0.2, exclude=exclude).loss.item(), rel=1e-5)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    assert fast.item() == pytest.approx(F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).item(), rel=1e-6)


def test_seed_loss_by_hand_and_gradient_to_the_student_only():
    s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    t = torch.tensor([[0.0, 1.0]], requires_grad=True)
    queue = torch.tensor([[1.0, 0.0]])
    # student logits [<s,t>, <s,q>] / 0.5 = [0, 2]; teacher [<t,t>, <t,q>] / 1 = [1, 0]
    p_t = torch.tensor([math.e, 1.0]) / (math.e + 1)
    log_p_s = torch.tensor([0.0, 2.0]) - math.log(1 + math.exp(2))
    expected = -(p_t * log_p_s).sum().item()
    loss = similarity_distribution_loss(s, t, queue, 0.5, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert s.grad is not None and t.grad is None


def test_queue_is_fifo_and_wraps_around():
    queue = KeyQueue(size=5, dim=2)
    assert (queue.ids == -1).all() and torch.allclose(queue.keys.norm(dim=1), torch.ones(5))
    first = F.normalize(torch.arange(1, 7, dtype=torch.float).view(3, 2), dim=1)
    queue.enqueue(first, torch.tensor([10, 11, 12]))
    assert queue.ids.tolist() == [10, 11, 12, -1, -1] and int(queue.pointer) == 3
    queue.enqueue(first[:3], torch.tensor([13, 14, 15]))  # wraps: 13, 14 at the end, 15 over the oldest
    assert queue.ids.tolist() == [15, 11, 12, 13, 14] and int(queue.pointer) == 1
    assert torch.equal(queue.keys[0], first[2])
    with pytest.raises(ValueError, match="one optimiser step enqueues 6"):
        queue.enqueue(torch.zeros(6, 2), torch.arange(6))
    with pytest.raises(ValueError, match="2-d"):
        queue.enqueue(torch.zeros(2, 3), torch.arange(2))
    assert capped_queue_size(65536, 1000) == 1000 and capped_queue_size(128, 1000) == 128
    assert set(queue.state_dict()) == {"keys", "ids", "pointer"}  # saved with checkpoints


def test_excluded_queue_entries_leave_the_denominator():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    exclude = torch.tensor([[True, False], [False, False]])  # row 0's older own key (queue row 0) is no negative
    # row 0: logits [1, (1), 0] -> -(1 - log(e + 1)); row 1: [1, 0, -1] -> -(1 - log(e + 1 + e^-1))
    expected = (-(1 - math.log(math.e + 1)) - (1 - math.log(math.e + 1 + math.exp(-1)))) / 2
    assert queue_nce(q, k, queue, 1.0, exclude=exclude).item() == pytest.approx(expected, rel=1e-6)
    assert queue_nce(q, k, queue, 1.0).item() > expected  # the own older key counted as a negative costs more
    with pytest.raises(ValueError, match=r"exclusion mask must be \[B, queue\] = \[2, 2\]"):
        queue_nce(q, k, queue, 1.0, exclude=torch.zeros(2, 3, dtype=torch.bool))


def test_seed_loss_without_the_excluded_entries_matches_the_shorter_queue():
    torch.manual_seed(1)
    s, t, queue = (F.normalize(torch.randn(n, 6), dim=1) for n in (3, 3, 5))
    exclude = torch.zeros(3, 5, dtype=torch.bool)
    exclude[:, 2] = True
    masked = similarity_distribution_loss(s, t, queue, 0.2, 0.05, exclude=exclude)
    shorter = similarity_distribution_loss(s, t, queue[[0, 1, 3, 4]], 0.2, 0.05)
    assert torch.isfinite(masked) and masked.item() == pytest.approx(shorter.item(), rel=1e-6)
    sharp = similarity_distribution_loss(s.requires_grad_(), t, queue, 0.2, 1e-4, exclude=exclude)  # underflowing target
    sharp.backward()
    assert torch.isfinite(sharp) and torch.isfinite(s.grad).all()


def test_same_image_marks_the_older_keys_of_each_id():
    queue = KeyQueue(size=4, dim=2)
    queue.enqueue(F.normalize(torch.ones(3, 2), dim=1), torch.tensor([7, 8, 9]))
    mask = queue.same_image(torch.tensor([8, 5, 7]))
    assert mask.tolist() == [[False, True, False, False], [False] * 4, [True, False, False, False]]


def test_queue_nce_matches_lightlys_moco_loss():
    """Cross-check with lightly's NTXentLoss over a memory bank (the MoCo form, test-only dependency): the same
    queries, positive keys and queue give the same loss; lightly has no exclusion mask, like the official codes
    (mask_same_id off)."""
    from lightly import loss as lightly_loss  # test-only dependency (the dev extra)

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    queue = torch.nn.functional.normalize(torch.randn(50, 16, generator=g), dim=1)
    reference = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(50, 16))
    assert reference.memory_bank.bank.shape == queue.shape  # [size, dim], returned transposed to the loss
    reference.memory_bank.bank.copy_(queue)
    expected = reference(q, k)  # q does not require grad: lightly leaves its bank as it is
    ours = queue_nce(torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(k, dim=1), queue, 0.2)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_similarity_distribution_by_hand():
    """Feature regression's relational term: SEED over the batch's own teacher keys, the row's own key only in the
    first column. Three 2-d embeddings, every logit written out."""
    s = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]])  # the third is normalised inside
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    tau_s, tau_t = 0.5, 0.25
    sn = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    dot = lambda a, b: a[0] * b[0] + a[1] * b[1]  # noqa: E731
    total = 0.0
    for i in range(3):
        keys = [t[i].tolist()] + [t[j].tolist() for j in range(3) if j != i]
        student = [dot(sn[i], k) / tau_s for k in keys]
        teacher = [dot(t[i].tolist(), k) / tau_t for k in keys]
        p = [math.exp(v) / sum(math.exp(w) for w in teacher) for v in teacher]
        log_q = [v - math.log(sum(math.exp(w) for w in student)) for v in student]
        total += -sum(pi * lq for pi, lq in zip(p, log_q))
    s_grad = s.clone().requires_grad_()
    t_grad = t.clone().requires_grad_()
    loss = batch_similarity_distribution_loss(s_grad, t_grad, tau_s, tau_t)
    assert loss.item() == pytest.approx(total / 3, rel=1e-6)
    loss.backward()
    assert s_grad.grad is not None and s_grad.grad.abs().sum() > 0 and t_grad.grad is None  # the teacher side is a target
