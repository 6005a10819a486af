"""Layer-wise Mutual Contrastive Learning (L-MCL, the TPAMI 2023 extension of MCL, docs/methods/mcl.md; code
github.com/winycg/L-MCL): the MCL terms of ``losses/mutual.py`` exchanged between every stage of every member, each
anchor weighted by a per-sample pair weight, and the aggregator over the stage classifiers. Pure tensor functions: the
embedding heads, the weighting network's projections and the aggregator's MLP belong to the caller.

A node is ``(network, stage)``; v_ak [B, D] is the L2-normalised embedding of stage k of network a. For every ordered
pair of nodes (a, k) → (b, z) of DIFFERENT networks a ≠ b and every stage pair (k, z), cross-depth included, in the
official loop order (a, then b, then k, then z), with ω = ω_{ak,bz} [B] and

    S_a = v_ak c_akᵀ / τ,   S_b = v_bz c_bzᵀ / τ,   S_ab = v_ak c_bzᵀ / τ,   S_ba = v_bz c_akᵀ / τ

(c = the contrast set: the embeddings themselves in the supervised in-batch case, the other view's keys label-free):

    VCL      += L_ω(S_a) + L_ω(S_b)                          vanilla blocks
    ICL      += L_ω(S_ab) + L_ω(S_ba)                        interactive blocks
    soft VCL += KL_ω(S_a ‖ sg S_b) + KL_ω(S_b ‖ sg S_a)
    soft ICL += KL_ω(S_ab ‖ sg S_ba) + KL_ω(S_ba ‖ sg S_ab)

    L_ω(S)      = (1/B) Σ_n ω_n ℓ_n(S),   ℓ_n = multi-positive InfoNCE of row n (``logits_nce``, reduction "weighted")
    KL_ω(s ‖ t) = T² (1/B) Σ_n ω_n Σ_m p^t_nm (log p^t_nm − log p^s_nm),   p = softmax(· / T) over full rows (``distill_kl``)

The same ω_n weights row n of all eight blocks of the pair. Same-network pairs (a = b, any k, z) are never contrasted.

Counting factor (the official code's, kept by ``pair_count="official"``): every pair call is already symmetric in its
two nodes and the loop visits each unordered node pair twice, so with ω ≡ 1 and one stage per network ICL, soft VCL and
soft ICL are exactly 2× the MCL terms of ``mutual_contrastive_terms`` and VCL is 2(M − 1)× (each node's vanilla term
appears 2 Σ_{b ≠ a} S_b times; 6× for M = 2, S = 3). ``pair_count="unordered"`` visits each unordered pair once
(network a before b in the embeddings' order): half of every term, so for M = 2 and one stage the MCL terms exactly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F

from ssdistill.losses.distill import distill_kl
from ssdistill.losses.infonce import logits_nce
from ssdistill.losses.mutual import TERMS, class_positive_masks

Node = tuple[Hashable, Hashable]  # (network, stage)
Pair = tuple[Hashable, Hashable, Hashable, Hashable]  # (a, k, b, z): anchor node (a, k), contrast node (b, z)
PAIR_COUNTS = ("official", "unordered")


def stages_by_network(nodes: Sequence[Node]) -> dict[Hashable, list[Hashable]]:
    """{network: [its stages]} in the order the nodes come (networks by first appearance)."""
    networks: dict[Hashable, list[Hashable]] = {}
    for node in nodes:
        if not isinstance(node, tuple) or len(node) != 2:
            raise ValueError(f"nodes are (network, stage) tuples, got {node!r}")
        networks.setdefault(node[0], []).append(node[1])
    return networks


def stage_pairs(nodes: Sequence[Node], pair_count: str = "official") -> list[tuple[Node, Node]]:
    """The node pairs ((a, k), (b, z)) of different networks in the official loop order (a, b ≠ a, k, z): every ordered
    pair (``official``) or each unordered pair once, network a before b (``unordered``). Heterogeneous stage counts
    give Σ_a Σ_{b≠a} S_a S_b ordered pairs."""
    if pair_count not in PAIR_COUNTS:
        raise ValueError(f"unknown pair_count '{pair_count}' (official, unordered)")
    networks = stages_by_network(nodes)
    order = list(networks)
    return [
        ((a, k), (b, z))
        for i, a in enumerate(order)
        for j, b in enumerate(order)
        if (i != j if pair_count == "official" else i < j)
        for k in networks[a]
        for z in networks[b]
    ]


def _batch_of(tensors: Mapping[Node, torch.Tensor], what: str) -> tuple[int, int]:
    """[B, D] shared by every tensor of ``tensors``, at least two networks."""
    shapes = {tuple(t.shape) for t in tensors.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{what} must all be [B, D] with the same B and D, got {sorted(shapes)}")
    if len(stages_by_network(list(tensors))) < 2:
        raise ValueError(f"{what} need stages of at least two networks, got networks {list(stages_by_network(list(tensors)))}")
    return next(iter(shapes))


def pair_weights(projected: Mapping[Node, torch.Tensor]) -> dict[Pair, torch.Tensor]:
    """{(a, k, b, z): ω [B]} for every ordered pair of nodes of different networks (``stage_pairs``, official order):

        ω_{ak,bz} = sigmoid(cos(P_ak f_ak, P_bz f_bz))   per sample, ∈ (0.27, 0.73); symmetric, ω_{ak,bz} = ω_{bz,ak}

    from the projected features P_ak f_ak [B, d] (the weighting network's projections are the caller's). Differentiable
    in ``projected``: the real step computes it under ``torch.no_grad()``, the meta step's virtual steps do not."""
    _batch_of(projected, "projected features")
    with torch.autocast(device_type=next(iter(projected.values())).device.type, enabled=False):
        unit = {node: F.normalize(p.float(), dim=1) for node, p in projected.items()}
        return {(*first, *second): torch.sigmoid((unit[first] * unit[second]).sum(1)) for first, second in stage_pairs(list(projected))}


class _Positives(NamedTuple):
    """Positive weights [B, C] and exclusion masks (or None) of the vanilla and the interactive blocks."""

    within: torch.Tensor
    across: torch.Tensor
    exclude_within: torch.Tensor | None
    exclude_across: torch.Tensor | None


def _positives(
    embeddings: Mapping[Node, torch.Tensor],
    labels: torch.Tensor | None,
    keys: Mapping[Node, torch.Tensor] | None,
    include_self_pair: bool,
    batch: int,
) -> tuple[Mapping[Node, torch.Tensor], _Positives]:
    """The contrast set of every node and the masks: class positives in-batch (supervised) or the same image's key."""
    if (labels is None) == (keys is None):
        raise ValueError("give labels (supervised, in-batch positives) or keys (label-free, the other view's embeddings), exactly one")
    if labels is not None:
        if labels.ndim != 1 or len(labels) != batch:
            raise ValueError(f"labels must be [B] = [{batch}], got {list(labels.shape)}")
        within, across, diagonal = class_positive_masks(labels, include_self_pair)
        return embeddings, _Positives(within, across, diagonal, None if include_self_pair else diagonal)
    if set(keys) != set(embeddings):
        raise ValueError(f"keys must have the embeddings' (network, stage) entries {list(embeddings)}, got {list(keys)}")
    shapes = {tuple(k.shape) for k in keys.values()}
    dim = next(iter(embeddings.values())).shape[1]
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] < batch or next(iter(shapes))[1] != dim:
        raise ValueError(f"keys must all be [C, D] with C >= B = {batch} and D = {dim}, got {sorted(shapes)}")
    columns = next(iter(shapes))[0]
    own = torch.eye(batch, columns, device=next(iter(keys.values())).device)  # row n's positive: key n, every other a negative
    return keys, _Positives(own, own, None, None)


def _check_weights(weights: Mapping[Pair, torch.Tensor], nodes: set[Node], pairs: list[tuple[Node, Node]], batch: int) -> None:
    for pair, omega in weights.items():
        if not isinstance(pair, tuple) or len(pair) != 4:
            raise ValueError(f"pair weights are keyed (a, k, b, z), got {pair!r}")
        for node in (pair[:2], pair[2:]):
            if node not in nodes:
                raise ValueError(f"a pair weight for {pair} but no embeddings of (network, stage) {node}")
        if pair[0] == pair[2]:
            raise ValueError(f"a pair weight for {pair} pairs network {pair[0]!r} with itself; only different networks are contrasted")
        if omega.ndim != 1 or len(omega) != batch:
            raise ValueError(f"the pair weight for {pair} must be [B] = [{batch}], got {list(omega.shape)}")
    for first, second in pairs:
        if (*first, *second) not in weights:
            raise ValueError(f"no pair weight for {(*first, *second)}: give one for every pair of stages of different networks (pair_weights)")


def layerwise_mutual_terms(
    embeddings: Mapping[Node, torch.Tensor],
    weights: Mapping[Pair, torch.Tensor] | None,
    *,
    temperature: float,
    kl_temperature: float,
    labels: torch.Tensor | None = None,
    keys: Mapping[Node, torch.Tensor] | None = None,
    include_self_pair: bool = False,
    pair_count: str = "official",
) -> dict[str, torch.Tensor]:
    """{vcl, icl, soft_vcl, soft_icl} summed over the node pairs of ``stage_pairs`` (module docstring), from
    ``embeddings`` {(network, stage): v [B, D]} (L2-normalised; networks may have different stage counts) and
    ``weights`` {(a, k, b, z): ω [B]} (``pair_weights``; None = ω ≡ 1). Exactly one positive definition:

    * ``labels`` [B] (supervised, the official CIFAR setting): contrast = the batch's own embeddings; positives = same
      class, not self (``class_positive_masks``); the diagonal leaves every vanilla denominator and, unless
      ``include_self_pair``, the interactive blocks too (the official code reuses the mask).
    * ``keys`` {(network, stage): k [C, D]}, C >= B (label-free): contrast = the keys of the other view, row n's only
      positive is key n, every other key a negative (the batch's other images, plus any rows the caller appends such as
      a lockstep queue, column-aligned across nodes so that the soft terms compare like with like). Detach the keys
      for a key encoder; the caller symmetrises the views if it wants both directions.

    The soft terms' targets are detached (``distill_kl``); ω is used as given: the real step passes constants
    (computed under no_grad), the meta step's virtual steps pass ω with its graph so that the loss differentiates into
    the weighting network. Rows without a positive add 0 (the official code gives NaN; the 2-per-class sampler avoids
    them) and still count in 1/B."""
    batch, _ = _batch_of(embeddings, "embeddings")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    pairs = stage_pairs(list(embeddings), pair_count)
    if weights is not None:
        _check_weights(weights, set(embeddings), pairs, batch)
    contrast, masks = _positives(embeddings, labels, keys, include_self_pair, batch)
    logits: dict[tuple[Node, Node], torch.Tensor] = {}

    def block(anchor: Node, other: Node) -> torch.Tensor:  # v_anchor c_otherᵀ / τ in float32, once per block
        if (anchor, other) not in logits:
            with torch.autocast(device_type=embeddings[anchor].device.type, enabled=False):
                logits[(anchor, other)] = embeddings[anchor].float() @ contrast[other].float().T / temperature
        return logits[(anchor, other)]

    terms: dict[str, list[torch.Tensor]] = {name: [] for name in TERMS}
    for first, second in pairs:
        omega = None if weights is None else weights[(*first, *second)]
        s_a, s_b, s_ab, s_ba = block(first, first), block(second, second), block(first, second), block(second, first)
        for s in (s_a, s_b):
            terms["vcl"].append(logits_nce(s, masks.within, masks.exclude_within, omega, reduction="weighted").loss)
        for s in (s_ab, s_ba):
            terms["icl"].append(logits_nce(s, masks.across, masks.exclude_across, omega, reduction="weighted").loss)
        for student, target in ((s_a, s_b), (s_b, s_a)):
            terms["soft_vcl"].append(distill_kl(student, target, kl_temperature, row_weights=omega))
        for student, target in ((s_ab, s_ba), (s_ba, s_ab)):
            terms["soft_icl"].append(distill_kl(student, target, kl_temperature, row_weights=omega))
    return {name: torch.stack(values).sum() for name, values in terms.items()}


def aggregate_logits(stage_logits: Sequence[torch.Tensor], stage_scores: torch.Tensor) -> torch.Tensor:
    """Σ_k softmax(scores)_nk · z_k[n] [B, C]: one network's stage logits z_k [B, C] mixed per sample by the softmax over
    the stages of ``stage_scores`` [B, S] (the aggregator MLP's output on the concatenated stage features, the
    caller's). Differentiable in both, in float32."""
    if not stage_logits or stage_scores.ndim != 2 or tuple(stage_scores.shape) != (len(stage_logits[0]), len(stage_logits)):
        raise ValueError(
            f"stage scores must be [B, S] = [B, {len(stage_logits)}] for {len(stage_logits)} stage logits, got {list(stage_scores.shape)}"
        )
    if len({tuple(z.shape) for z in stage_logits}) != 1 or stage_logits[0].ndim != 2:
        raise ValueError(f"stage logits must all be [B, C], got {[list(z.shape) for z in stage_logits]}")
    with torch.autocast(device_type=stage_scores.device.type, enabled=False):
        mix = torch.softmax(stage_scores.float(), dim=1)
        return torch.stack([z.float() * mix[:, k : k + 1] for k, z in enumerate(stage_logits)]).sum(0)


def aggregation_loss(
    stage_logits: Mapping[Hashable, Sequence[torch.Tensor]],
    aggregated: Mapping[Hashable, torch.Tensor],
    labels: torch.Tensor,
    kl_temperature: float,
) -> dict[str, torch.Tensor]:
    """The official code's classification terms, each with weight 1 in its loss:

        ce           = Σ_a Σ_k CE(z_ak, y)                     every stage's classifier, the final one included
        aggregate_ce = Σ_a CE(agg_a, y)                        (trains the aggregator, the heads and the backbones)
        logit_kd     = Σ_a Σ_b KL_T(z_a,final ‖ sg agg_b)       b = a included; the final (last) stage only

    from ``stage_logits`` {network: [z_ak [B, C], shallow → deep]} and ``aggregated`` {network: agg_a [B, C]}
    (``aggregate_logits``). Official T = 3."""
    if set(stage_logits) != set(aggregated) or not aggregated:
        raise ValueError(f"stage logits and aggregated logits must name the same networks, got {list(stage_logits)} and {list(aggregated)}")
    batch = len(labels)
    shapes = {tuple(z.shape) for z in aggregated.values()} | {tuple(z.shape) for zs in stage_logits.values() for z in zs}
    if len(shapes) != 1 or next(iter(shapes))[0] != batch or any(not zs for zs in stage_logits.values()):
        raise ValueError(f"every stage and aggregated logit must be [B, C] with B = {batch} labels, got {sorted(shapes)}")
    ce = torch.stack([F.cross_entropy(z.float(), labels) for zs in stage_logits.values() for z in zs]).sum()
    aggregate_ce = torch.stack([F.cross_entropy(agg.float(), labels) for agg in aggregated.values()]).sum()
    logit_kd = torch.stack([distill_kl(zs[-1], agg, kl_temperature) for zs in stage_logits.values() for agg in aggregated.values()]).sum()
    return {"ce": ce, "aggregate_ce": aggregate_ce, "logit_kd": logit_kd}
