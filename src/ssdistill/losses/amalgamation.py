"""The loss terms of contrastive knowledge amalgamation, CKA (docs/methods/cka.md; the project's reconstruction: the paper's
formulas are not public). M teachers, each with its own unsupervised task; every image of a batch carries its task id
(the data subset it comes from) and, per teacher t, a pseudo-class ŷ_t (argmax of that teacher's task logits).

* ``task_distillation``: Σ_t KL_T(student head t ‖ teacher t's task logits) over the images of task t (``own``) or
  over every image (``all``);
* ``intra_contrast``: InfoNCE among the student's common-space embeddings; positives share the task and the
  pseudo-class (not the image itself, which is excluded from the denominator too);
* ``inter_contrast``: Σ_t InfoNCE of the student's anchors of task t against teacher t's common-space embeddings of the
  whole batch; positives: images of task t with the anchor's pseudo-class, the same image included;
* ``alignment``: Σ_t over the images of task t of ‖a_s − a_t‖² (= 2 − 2 cos for unit vectors), or multi-bandwidth MMD²
  between the two sets (CFL), or the row-wise KL between the teacher's and the student's in-batch similarity
  distributions (relational);
* ``reconstruction``: Σ_t mean ‖D_t(a_t) − z_t‖² / d_t (CFL's decoder term).

Every function is pure (tensors in, a scalar out) and sends no gradient into what it calls a target.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from ssdistill.losses.distill import distill_kl
from ssdistill.losses.infonce import info_nce


def task_distillation(
    student_logits: Sequence[torch.Tensor],
    teacher_logits: Sequence[torch.Tensor],
    task: torch.Tensor,
    temperature: float = 4.0,
    targets_on: str = "own",
) -> torch.Tensor:
    """Σ_t KL_T(student_logits[t] ‖ sg teacher_logits[t]) over the rows of task t (``own``) or all rows (``all``);
    student_logits[t], teacher_logits[t]: [B, C_t]; task: [B] task ids 0..M-1. A task without rows in the batch adds 0."""
    if targets_on not in ("own", "all"):
        raise ValueError(f"targets_on is own or all, got {targets_on!r}")
    total = student_logits[0].new_zeros(())
    for t, (student, teacher) in enumerate(zip(student_logits, teacher_logits, strict=True)):
        rows = torch.ones_like(task, dtype=torch.bool) if targets_on == "all" else task == t
        if rows.any():
            total = total + distill_kl(student[rows], teacher[rows], temperature)
    return total


def same_pseudo_class(task: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
    """[B, B] mask of pairs with the same task and the same pseudo-class of that task (the diagonal included)."""
    return (task.view(-1, 1) == task.view(1, -1)) & (pseudo.view(-1, 1) == pseudo.view(1, -1))


def intra_contrast(student: torch.Tensor, task: torch.Tensor, pseudo: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE among the student's unit embeddings [B, D]: positives = same task and pseudo-class, j ≠ i; the diagonal
    leaves the denominator. ``pseudo[i]`` is the pseudo-class of image i under its own task's teacher. Rows without a
    positive are skipped."""
    eye = torch.eye(len(student), dtype=torch.bool, device=student.device)
    positives = same_pseudo_class(task, pseudo) & ~eye
    return info_nce(student, student, positives.float(), temperature, exclude=eye).loss


def inter_contrast(
    student: torch.Tensor, teachers: Sequence[torch.Tensor], task: torch.Tensor, pseudo: Sequence[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """Σ_t InfoNCE(anchors: the student's embeddings of the images of task t; contrast: teacher t's common-space
    embeddings of the whole batch [B, D]); positives: images of task t with the anchor's pseudo-class under teacher t
    (``pseudo[t]`` [B]), the same image included. Gradient reaches both the student and the teachers' projectors."""
    total = student.new_zeros(())
    for t, (embeddings, classes) in enumerate(zip(teachers, pseudo, strict=True)):
        rows = task == t
        if not rows.any():
            continue
        positives = (classes[rows].view(-1, 1) == classes.view(1, -1)) & (task == t).view(1, -1)
        total = total + info_nce(student[rows], embeddings, positives.float(), temperature).loss
    return total


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.5, 1.0, 2.0, 4.0, 8.0)) -> torch.Tensor:
    """Biased multi-bandwidth Gaussian MMD² between the sets x [n, D] and y [m, D]: mean over bandwidths σ of
    E k(x, x') + E k(y, y') − 2 E k(x, y), k(u, v) = exp(−‖u − v‖² / (2σ²))."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, y = x.float(), y.float()
        joint = torch.cat([x, y])
        distances = torch.cdist(joint, joint).pow(2)
        kernels = sum(torch.exp(-distances / (2 * sigma**2)) for sigma in bandwidths) / len(bandwidths)
        n = len(x)
        return kernels[:n, :n].mean() + kernels[n:, n:].mean() - 2 * kernels[:n, n:].mean()


def alignment(
    student: torch.Tensor, teachers: Sequence[torch.Tensor], task: torch.Tensor, kind: str = "cosine", temperature: float = 0.1
) -> torch.Tensor:
    """Σ_t alignment of the student's and teacher t's unit common-space embeddings over the images of task t:
    ``cosine`` mean ‖a_s − a_t‖²; ``mmd`` MMD² of the two sets; ``relational`` KL(softmax(a_t a_tᵀ/τ) ‖ softmax(a_s a_sᵀ/τ))
    row by row, the teacher's distribution as target (no gradient into it)."""
    if kind not in ("cosine", "mmd", "relational"):
        raise ValueError(f"alignment is cosine, mmd or relational, got {kind!r}")
    total = student.new_zeros(())
    for t, embeddings in enumerate(teachers):
        rows = task == t
        if not rows.any():
            continue
        s, a = student[rows].float(), embeddings[rows].float()
        if kind == "cosine":
            total = total + (s - a).pow(2).sum(1).mean()
        elif kind == "mmd":
            total = total + mmd2(s, a)
        else:
            with torch.autocast(device_type=s.device.type, enabled=False):
                total = total + distill_kl(s @ s.T / temperature, a @ a.T / temperature, 1.0, t_squared=False)
    return total


def reconstruction(decoded: Sequence[torch.Tensor], features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_t mean_i ‖D_t(a_t,i) − z_t,i‖² / d_t: each decoder's reconstruction of its teacher's (fixed) features."""
    total = decoded[0].new_zeros(())
    for out, target in zip(decoded, features, strict=True):
        total = total + F.mse_loss(out.float(), target.detach().float(), reduction="sum") / len(out) / target.shape[1]
    return total


def mean_pairwise_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """Collapse guard (docs/methods/cka.md): the mean cosine between different rows of unit embeddings (1 = collapsed)."""
    n = len(embeddings)
    if n < 2:
        return embeddings.new_zeros(())
    similarity = embeddings.float() @ embeddings.float().T
    return (similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1))
