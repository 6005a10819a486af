"""Dependence measures between two batches of representations (docs/methods/mvmr.md): distance correlation,
HSIC and linear CKA, all on one double-centring routine, always in float32 with autocast off.

X is [n, p] and Y is [n, q] (or [n, ...], flattened per sample): the widths may differ, the rows
(samples) must match."""

from __future__ import annotations

import torch


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim < 2 or y.ndim < 2:
        raise ValueError(f"dependence measures take [n, ...] batches (flattened per sample), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"the two batches must hold the same samples: {len(x)} vs {len(y)} rows")
    if len(x) < 2:
        raise ValueError("dependence measures need a batch of at least 2 samples")


def double_center(matrix: torch.Tensor) -> torch.Tensor:
    """A_ij = a_ij - mean_i. - mean_.j + mean_.. (equals H a H with H = I - 11ᵀ/n)."""
    return matrix - matrix.mean(0, keepdim=True) - matrix.mean(1, keepdim=True) + matrix.mean()


def pairwise_distances(x: torch.Tensor, clamp: float = 1e-4) -> torch.Tensor:
    """Euclidean distances [n, n] via the Gram matrix of the mean-subtracted batch; squared distances
    are clamped at ``clamp`` before the square root (so gradients stay finite on the diagonal)."""
    x = x - x.mean(0, keepdim=True)  # translation invariant; limits cancellation in the Gram form
    gram = x @ x.T
    squared_norms = gram.diagonal()
    squared = squared_norms.view(-1, 1) + squared_norms.view(1, -1) - 2 * gram
    return squared.clamp_min(clamp).sqrt()


def _fp32(fn):
    def wrapped(x: torch.Tensor, y: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        _check_pair(x, y)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return fn(x.float().flatten(1), y.float().flatten(1), *args, **kwargs)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


def u_center(matrix: torch.Tensor) -> torch.Tensor:
    """U-centring of a distance matrix (Székely & Rizzo 2014): zero diagonal, row/column sums over n - 2."""
    n = len(matrix)
    if n < 4:
        raise ValueError("the unbiased distance correlation needs a batch of at least 4 samples")
    row = matrix.sum(1, keepdim=True) / (n - 2)
    col = matrix.sum(0, keepdim=True) / (n - 2)
    centred = matrix - row - col + matrix.sum() / ((n - 1) * (n - 2))
    return centred * (1 - torch.eye(n, device=matrix.device, dtype=matrix.dtype))


@_fp32
def distance_correlation(x: torch.Tensor, y: torch.Tensor, clamp: float = 1e-4, estimator: str = "biased") -> torch.Tensor:
    """Distance correlation of two batches.

    ``biased`` (default, as in the paper): the V-statistic dCor(X, Y) in [0, 1] (Székely et al. 2007) with the
    distance clamp of docs/methods/mvmr.md, dCor = sqrt(dCov²(X,Y) / sqrt(dCov²(X,X) dCov²(Y,Y))), each root taken of
    max(., 1e-12). It is strongly biased upwards for wide representations and small batches (about 0.99 for
    independent 1280-d and 1024-d Gaussians at n = 64).
    ``unbiased``: the bias-corrected squared distance correlation R*² (Székely & Rizzo 2014, U-centred), about 0
    for independent samples at any width and 1 for identical ones; it may be slightly negative."""
    if estimator == "unbiased":
        a = u_center(pairwise_distances(x, clamp))
        b = u_center(pairwise_distances(y, clamp))
        return (a * b).sum() / torch.sqrt(((a * a).sum() * (b * b).sum()).clamp_min(1e-24))
    if estimator != "biased":
        raise ValueError(f"unknown dCor estimator '{estimator}' (biased, unbiased)")
    a = double_center(pairwise_distances(x, clamp))
    b = double_center(pairwise_distances(y, clamp))
    dcov_xy = (a * b).mean()
    dcov_xx = (a * a).mean()
    dcov_yy = (b * b).mean()
    denominator = torch.sqrt((dcov_xx * dcov_yy).clamp_min(1e-12))
    return torch.sqrt((dcov_xy / denominator).clamp_min(1e-12))


@_fp32
def hsic(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear") -> torch.Tensor:
    """Biased HSIC tr(K H L H) / (n - 1)² with linear kernels or Gaussian kernels of median bandwidth."""
    k, l = _kernel(x, kernel), _kernel(y, kernel)
    n = len(x)
    return (double_center(k) * l).sum() / (n - 1) ** 2


@_fp32
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) with linear kernels, through n x n Gram matrices."""
    k, l = double_center(x @ x.T), double_center(y @ y.T)
    return (k * l).sum() / torch.sqrt(((k * k).sum() * (l * l).sum()).clamp_min(1e-24))


def _kernel(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "linear":
        return x @ x.T
    if kind == "gaussian":
        squared = torch.cdist(x, x).pow(2)
        off_diagonal = squared[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
        bandwidth = off_diagonal.median().clamp_min(1e-12)
        return torch.exp(-squared / (2 * bandwidth))
    raise ValueError(f"unknown kernel '{kind}' (linear, gaussian)")
