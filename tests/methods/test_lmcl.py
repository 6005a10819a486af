"""L-MCL (docs/methods/mcl.md, the journal version): the cohort's stages and heads, the supervised loss recomputed by
hand from the cohort's outputs (ω of the weighting network, the aggregator, the KD), the label-free loss (both view
directions), the meta step (only the weighting network moves, the run's optimiser never sees it), the no-meta
ablation, the presets and the recorded departures, heterogeneous cohorts, the stage classifiers from a checkpoint."""

import pytest
import torch
from torch.nn import functional as F

from ssdistill.errors import ConfigError, ModelError
from ssdistill.losses.layerwise import layerwise_mutual_terms
from ssdistill.methods.lmcl.cohort import final_instance_nce
from ssdistill.methods.lmcl.method import LMCL
from ssdistill.recipe import build_config
from ssdistill.runs.load import build_students

LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
CIFAR_RECIPE_SECTIONS = {
    "aug": {"recipe": "cifar_basic"},
    "optim": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "warmup_epochs": 0},
}


def _module(mode="supervised", cohort=None, student="test_resnet", **method):
    cfg = build_config(
        {
            "method": {"name": "lmcl", "mode": mode, "out_dim": 16, "weighting_dim": 8, **({"cohort": cohort} if cohort else {}), **method},
            "student": {"arch": student, "resolution": 32},
        }
    )
    torch.manual_seed(0)
    prepared = {"classes": torch.tensor(4)} if mode == "supervised" else {}
    module = LMCL(cfg, build_students(LMCL, cfg), {}, dataset_size=40, prepared=prepared)
    module.log_loss = lambda loss, **terms: (setattr(module, "terms", terms), loss)[1]
    return module


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=g)
    return {
        "views": {"student": images, "query": images, "key": torch.rand(n, 3, 32, 32, generator=g)},
        "label": LABELS[:n],
        "index": torch.arange(n),
    }


def test_every_member_gets_a_branch_on_every_stage_but_its_last_and_heads_per_stage():
    module = _module(cohort=["cifar_resnet20", "test_efficientnet"])
    assert module.stage_dims == [[64, 64, 64], [256, 256, 256, 256]]  # copies end in the member's own width
    assert [len(b) for b in module.branches] == [2, 3] and [b.kind for b in module.branches[1]] == ["copy"] * 3
    assert [len(e) for e in module.embeds] == [3, 4] and [len(c) for c in module.classifiers] == [3, 4]
    assert [module.aggregators[i][-1].out_features for i in range(2)] == [3, 4]  # softmax over the member's own stages
    assert module.aggregators[1][0].in_features == 4 * 256
    features, embeddings, logits = module.cohort()(_batch()["views"]["student"])
    assert [[tuple(f.shape) for f in member] for member in features] == [[(8, 64)] * 3, [(8, 256)] * 4]
    assert all(torch.allclose(e.norm(dim=1), torch.ones(8)) for member in embeddings for e in member)
    assert [[tuple(z.shape) for z in member] for member in logits] == [[(8, 4)] * 3, [(8, 4)] * 4]
    # the member's own feature is its plain forward: the branches do not change what is exported
    with torch.no_grad():
        assert torch.allclose(features[1][-1], module.peer1(_batch()["views"]["student"]), atol=1e-6)
    # every ordered pair of stages of different members: 3·4 + 4·3
    assert len(module.pair_weights(features)) == 24


def test_the_supervised_loss_is_the_weighted_layerwise_terms_plus_the_classification_by_hand():
    module = _module(vcl_weight=0.3, icl_weight=0.7, soft_vcl_weight=2.0, soft_icl_weight=0.5, logit_kd_weight=1.5)
    batch = _batch()
    loss = module.training_step(batch, 0)
    t = module.terms
    with torch.no_grad():
        features, embeddings, logits = module.cohort()(batch["views"]["student"])
        unit = {(i, k): F.normalize(module.weighting[i][k](f), dim=1) for i, member in enumerate(features) for k, f in enumerate(member)}
        omega = {(a, k, b, z): torch.sigmoid((unit[a, k] * unit[b, z]).sum(1)) for (a, k) in unit for (b, z) in unit if a != b}
        nodes = {(i, k): e for i, member in enumerate(embeddings) for k, e in enumerate(member)}
        terms = layerwise_mutual_terms(nodes, omega, temperature=0.1, kl_temperature=3.0, labels=LABELS)
        ce = sum(F.cross_entropy(z, LABELS) for member in logits for z in member)
        aggregated = []
        for i, member in enumerate(logits):
            mix = torch.softmax(module.aggregators[i](torch.cat(features[i], 1)), 1)
            aggregated.append(sum(mix[:, k : k + 1] * z for k, z in enumerate(member)))
        aggregate_ce = sum(F.cross_entropy(a, LABELS) for a in aggregated)
        kd = sum(9 * F.kl_div(F.log_softmax(member[-1] / 3, 1), F.softmax(a / 3, 1), reduction="batchmean") for member in logits for a in aggregated)
    for name in terms:
        assert t[name].item() == pytest.approx(terms[name].item(), rel=1e-5), name
    assert t["ce"].item() == pytest.approx(ce.item(), rel=1e-5) and t["aggregate_ce"].item() == pytest.approx(aggregate_ce.item(), rel=1e-5)
    assert t["logit_kd"].item() == pytest.approx(1.5 * kd.item(), rel=1e-5)
    expected = 0.3 * terms["vcl"] + 0.7 * terms["icl"] + 2.0 * terms["soft_vcl"] + 0.5 * terms["soft_icl"] + ce + aggregate_ce + 1.5 * kd
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    stacked = torch.stack(list(omega.values()))
    assert t["omega_mean"].item() == pytest.approx(stacked.mean().item(), rel=1e-6) and 0.27 < stacked.min() and stacked.max() < 0.73


def test_the_real_step_trains_every_member_branch_and_head_but_never_the_weighting_network():
    module = _module(cohort=["test_resnet", "test_efficientnet"])
    module.training_step(_batch(), 0).backward()
    trained = [module.student, module.peer1, module.branches, module.embeds, module.classifiers, module.aggregators]
    for part in trained:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()), type(part).__name__
    assert all(p.grad is None for p in module.weighting.parameters())
    module.batches_per_epoch = lambda: 10
    optimised = {id(p) for group in module.configure_optimizers()["optimizer"].param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.weighting.parameters()}
    assert optimised == {id(p) for p in module.parameters()} - {id(p) for p in module.weighting.parameters()}
    names = dict(module.named_parameters())
    assert module._ddp_params_and_buffers_to_ignore and all(
        n in names and n.startswith("weighting.") for n in module._ddp_params_and_buffers_to_ignore
    )


@pytest.mark.parametrize("mode", ["supervised", "label_free"])
def test_the_meta_step_moves_only_the_weighting_network(mode):
    """The cohort (every parameter, BatchNorm buffer and .grad) is bitwise as before; the hypergradient reaches the
    weighting network, whose optimiser runs at the run's learning rate."""
    module = _module(mode, cohort=["test_resnet", "test_efficientnet"], meta_every=1)
    batch = _batch()
    module.training_step(batch, 0).backward()
    before = {k: v.clone() for k, v in module.state_dict().items() if not k.startswith("weighting.")}
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    weighting = [p.clone() for p in module.weighting.parameters()]
    stats = module.meta_update(batch)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(grads[n], p.grad) for n, p in module.named_parameters() if n in grads)
    assert stats.weighting_grad_norm > 0 and all(p.grad is not None for p in module.weighting.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(weighting, module.weighting.parameters()))
    assert module.weighting_optimizer.param_groups[0]["lr"] == module.cfg.optim.lr
    own = _module(mode, meta_every=1, meta_lr=0.5)  # for adam/adamw runs: the virtual SGD steps' own peak, on the run's schedule
    own.meta_update(batch)
    assert own.weighting_optimizer.param_groups[0]["lr"] == 0.5


def test_the_label_free_loss_averages_both_view_directions_and_the_outer_loss_is_the_final_stages_instance_nce():
    module = _module("label_free", temperature=0.2)
    batch = _batch()
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        (f_q, e_q, _), (f_k, e_k, _) = module.cohort()(batch["views"]["query"]), module.cohort()(batch["views"]["key"])
        one = module.mutual(e_q, module.pair_weights(f_q), keys=e_k)
        two = module.mutual(e_k, module.pair_weights(f_k), keys=e_q)
    for name in one:
        assert module.terms[name].item() == pytest.approx(((one[name] + two[name]) / 2).item(), rel=1e-5)
    assert "ce" not in module.terms and module.classifiers is None and module.aggregators is None
    assert loss.item() == pytest.approx(sum((one[n] + two[n]).item() / 2 for n in one), rel=1e-5)  # α = β = γ = λ = 1
    q, k = F.normalize(torch.randn(4, 3), dim=1), F.normalize(torch.randn(4, 3), dim=1)
    by_hand = 0.5 * (F.cross_entropy(q @ k.T / 0.5, torch.arange(4)) + F.cross_entropy(k @ q.T / 0.5, torch.arange(4)))
    assert final_instance_nce(q, k, 0.5).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_meta_off_is_the_ablation_with_uniform_weights_and_is_recorded():
    module = _module(meta=False)
    assert module.weighting is None and module.weighting_optimizer is None
    batch = _batch()
    module.training_step(batch, 0)
    with torch.no_grad():
        _, embeddings, _ = module.cohort()(batch["views"]["student"])
        uniform = layerwise_mutual_terms(
            {(i, k): e for i, m in enumerate(embeddings) for k, e in enumerate(m)}, None, temperature=0.1, kl_temperature=3.0, labels=LABELS
        )
    assert module.terms["vcl"].item() == pytest.approx(uniform["vcl"].item(), rel=1e-6) and "omega_mean" not in module.terms
    assert LMCL.deviations(module.cfg)[:3] == [
        "out_dim: 16 (official: 128)",
        "meta: False (official: True)",
        "aug.recipe: moco_v2 (official: cifar_basic)",
    ]
    assert "optim.nesterov: false (official: true)" in LMCL.deviations(module.cfg)  # the official CIFAR optimiser


def test_preset_official_is_the_supervised_cifar_code_and_label_free_records_that_it_is_ours():
    cfg = build_config({"method": {"name": "lmcl", "mode": "supervised", "preset": "official"}, **CIFAR_RECIPE_SECTIONS})
    m = cfg.method
    assert (m.effective("temperature"), m.effective("vcl_weight"), m.effective("icl_weight"), m.soft_vcl_weight, m.soft_icl_weight) == (
        0.1,
        0.1,
        0.1,
        1,
        1,
    )
    assert (m.kl_temperature, m.meta_every, m.meta_steps, m.meta_outer_step, m.branch, m.pair_count) == (3.0, 50, 2, True, "copy", "official")
    assert LMCL.deviations(cfg) == []
    changed = build_config({"method": {"name": "lmcl", "mode": "supervised", "preset": "official", "pair_count": "unordered", "branch": "light"}})
    assert "pair_count: unordered (official: official)" in LMCL.deviations(changed) and "branch: light (official: copy)" in LMCL.deviations(changed)
    with pytest.raises(ConfigError, match="no official code"):
        build_config({"method": {"name": "lmcl", "mode": "label_free", "preset": "official"}})
    ours = build_config({"method": {"name": "lmcl", "meta_every": 10, "temperature": 0.5, "vcl_weight": 1.0, "meta_lr": 0.1}})
    assert LMCL.deviations(ours) == [  # vcl_weight 1 is the label-free default: not a departure
        "mode: label_free (ours: the official code is supervised only)",
        "temperature: 0.5 (ssdistill default: 0.2)",
        "meta_every: 10 (ssdistill default: 50)",
        "meta_lr: 0.1 (ssdistill default: unset)",
    ]
    with pytest.raises(ConfigError, match="M >= 2"):
        build_config({"method": {"name": "lmcl", "cohort": ["test_resnet"]}})


def test_a_token_student_needs_the_light_branch_and_gets_it():
    with pytest.raises(ModelError, match="use auxiliary branch kind 'light'"):
        _module(student="test_vit")
    module = _module(student="test_vit", branch="light", branch_width=12)
    assert all(b.kind == "light" and b[0].out_channels == 12 for member in module.branches for b in member)
    module.training_step(_batch(), 0).backward()
    assert all(p.grad is not None for member in module.branches for b in member for p in b.parameters())


def test_each_members_final_stage_classifier_is_rebuilt_from_the_checkpoint():
    module = _module(cohort=["test_resnet", "test_efficientnet"])
    rebuilt = LMCL.classifiers_from_checkpoint(module.cfg, module.state_dict())
    own = module.member_classifiers()
    assert list(rebuilt) == list(own) == ["student", "peer1"]
    for member in own:
        assert torch.equal(rebuilt[member].weight, own[member].weight) and torch.equal(rebuilt[member].bias, own[member].bias)
    assert own["peer1"] is module.classifiers[1][-1]
    assert LMCL.classifiers_from_checkpoint(_module("label_free").cfg, {}) == {}


def test_the_weighting_optimisers_state_comes_back_from_the_checkpoint_on_the_parameters_device_and_dtype():
    """Lightning restores a checkpoint before it moves the module to the run's device: the state is kept aside and
    loaded at fit start, where the optimiser casts it to its parameters (float64 here standing in for a device)."""
    module = _module(meta_every=1)
    module.meta_update(_batch())
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    fresh = _module(meta_every=1)
    fresh.on_load_checkpoint(checkpoint)
    assert not fresh.weighting_optimizer.state_dict()["state"]  # not yet: the parameters may still move
    fresh.double()
    fresh.on_fit_start()
    saved, loaded = module.weighting_optimizer.state_dict()["state"], fresh.weighting_optimizer.state_dict()["state"]
    assert saved and saved.keys() == loaded.keys()
    assert all(loaded[i]["momentum_buffer"].dtype == torch.float64 for i in loaded)
    assert all(torch.equal(saved[i]["momentum_buffer"].double(), loaded[i]["momentum_buffer"]) for i in saved)


def test_the_stage_plans_follow_modules_lightning_replaces_and_stage_heads_evaluate_in_eval_mode():
    """sync_batchnorm swaps BatchNorm modules after the method is built: fit start rebuilds the plans from the module
    tree. A stage head holds its student, so eval() reaches the trunk: one image alone gives what it gives in a batch."""
    from ssdistill.methods.lmcl.cohort import StageHead

    module = _module()
    torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    tree = {id(m) for m in module.modules()}
    stale = [m for m in module.plans[0].stem.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in tree]
    assert stale  # the stem's BatchNorm, which the plan references directly, was replaced in the tree
    module.on_fit_start()
    tree = {id(m) for m in module.modules()}
    assert all(id(m) in tree for plan in module.plans for part in (plan.stem, *plan.stages) for m in part.modules() if m is not part)
    plain = _module()
    head = StageHead(plain.plans[0], plain.branches[0][1]).eval()
    assert head.student is plain.student and not plain.student.training
    images = _batch()["views"]["student"]
    with torch.no_grad():
        assert torch.allclose(head(images)[:1], head(images[:1]), atol=1e-5)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="method.meta_lr is needed with optim.optimizer=adamw"):
        _adamw_module()
    with pytest.raises(ConfigError, match="branch_width sets the conv width of a light branch"):
        build_config({"method": {"name": "lmcl", "branch_width": 8}})
    plain = build_config({"method": {"name": "lmcl", "mode": "supervised"}, "optim": {"momentum": 0.0}, "student": {"arch": "test_resnet"}})
    module = LMCL(plain, build_students(LMCL, plain), {}, dataset_size=40, prepared={"classes": torch.tensor(4)})  # no Nesterov without momentum
    assert module.weighting_optimizer.defaults["nesterov"] is False


def _adamw_module():
    cfg = build_config({"method": {"name": "lmcl"}, "optim": {"optimizer": "adamw", "lr": 0.002}, "student": {"arch": "test_resnet"}})
    return LMCL(cfg, build_students(LMCL, cfg), {}, dataset_size=40)
