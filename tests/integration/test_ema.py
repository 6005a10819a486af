"""The engine's EMA copy of the student (``trainer.ema_momentum``), for any method: updated after every optimiser step
(parameters and BatchNorm statistics), evaluated as the row ``student_ema`` (no random-init row of its own), kept in the
checkpoint, exported with ``--member ema``; a cohort gets one copy per trained member."""

import json

import pytest
import torch
from torch import nn

from ssdistill import distill
from ssdistill.cli import main
from ssdistill.engine.module import ema_update
from ssdistill.errors import TrainingError
from ssdistill.methods.feature import FeatureDistillation
from ssdistill.methods.registry import METHODS
from ssdistill.recipe import build_config
from ssdistill.runs.load import build_students

from integration.common import tiny_config
from integration.test_cohort import PairFeature


def test_ema_update_moves_parameters_and_batchnorm_statistics_and_copies_counters():
    target, online = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)), nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    with torch.no_grad():
        target[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        online[0].weight.copy_(torch.tensor([[5.0, -2.0]]))
        target[1].running_mean.fill_(0.0)
        online[1].running_mean.fill_(4.0)
        online[1].num_batches_tracked.fill_(7)
    ema_update(target, online, 0.75)
    assert target[0].weight.tolist() == [[2.0, 1.0]]  # 0.75 * 1 + 0.25 * 5, 0.75 * 2 + 0.25 * -2
    assert target[1].running_mean.tolist() == [1.0] and int(target[1].num_batches_tracked) == 7
    assert online[0].weight.tolist() == [[5.0, -2.0]]  # the online model is untouched


def _state(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_the_ema_copy_leaves_the_trained_student_as_it_is_without_one(tmp_path):
    """The copy only watches: the student trained beside it is, weight for weight, the student of the same run without
    it. The recipe ablation relies on this: the recommended row's student is the 60-epoch row, its EMA copy the next."""
    states = []
    for name, momentum in (("plain", None), ("with_ema", 0.9)):
        distill(tiny_config(tmp_path, trainer={"epochs": 2, "ema_momentum": momentum}, run={"dir": str(tmp_path / "runs"), "name": name}), quiet=True)
        states.append({k: v for k, v in _state(tmp_path / "runs" / name).items() if k.startswith("student.")})
    assert states[0].keys() == states[1].keys() and states[0]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_ema_copy_follows_the_student_is_evaluated_and_exports(tmp_path, momentum):
    """Momentum 0: the copy is the trained student, BatchNorm statistics included (same k-NN); 0.9: it is neither the
    initial nor the trained student. Either way it is the row student_ema, without a random-init row of its own."""
    raw = tiny_config(tmp_path, trainer={"epochs": 2, "ema_momentum": momentum}, eval={"random_init": True})
    results = distill(raw, quiet=True)
    assert list(results["knn"]) == ["random_init", "student", "student_ema"]
    assert set(results["students"]) == {"student", "ema"}
    run_dir = tmp_path / "runs" / "tiny"
    state = _state(run_dir)
    student = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
    ema = {k[len("ema.") :]: v for k, v in state.items() if k.startswith("ema.")}
    assert ema.keys() == student.keys()
    initial = build_students(FeatureDistillation, build_config(raw))["student"].state_dict()
    moved = [k for k, v in student.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert moved and any("running_mean" in k for k in moved)
    if momentum == 0.0:
        assert all(torch.equal(ema[k], student[k]) for k in student)
        assert results["knn"]["student_ema"]["top1"] == results["knn"]["student"]["top1"]
    else:
        # an average over the trajectory: neither the start nor the end (the update itself is checked by hand above)
        assert all(not torch.equal(ema[k], student[k]) and not torch.equal(ema[k], initial[k]) for k in moved)
    main(["export", str(run_dir), "--member", "ema", "--output", str(tmp_path / "ema")])
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["ssdistill"]["member"] == "ema"


def test_a_cohort_gets_one_copy_per_trained_member_and_a_clash_is_a_clear_error(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(METHODS, "pair_feature", PairFeature)
        cfg = build_config(tiny_config(tmp_path, method={"name": "pair_feature", "projector_hidden": [32]}, trainer={"ema_momentum": 0.99}))
        assert list(PairFeature.run_members(cfg)) == ["student", "peer", "ema", "peer_ema"]
        assert PairFeature.run_copies(cfg) == {"ema": "student", "peer_ema": "peer"}
        assert list(PairFeature.run_members(cfg.model_copy(update={"trainer": cfg.trainer.model_copy(update={"ema_momentum": None})}))) == [
            "student",
            "peer",
        ]

        class Clash(PairFeature):
            @classmethod
            def student_members(cls, cfg):
                return {"student": cfg.student, "ema": cfg.student}

        with pytest.raises(TrainingError, match="clashes with the EMA copy of 'student'"):
            Clash.run_members(cfg)


def test_the_recommended_recipe_runs_from_the_command_line_over_a_config(tmp_path, capsys):
    """`ssdistill distill --recipe recommended --config C key=value`: the recipe's ingredients (centred targets, SEED's
    relational term, the EMA row), the config's data and models, the overrides' schedule."""
    import yaml

    config = tiny_config(tmp_path)
    del config["method"]  # the recipe's method; the tiny config's data, teacher and student
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    main(
        [
            "distill",
            "--recipe",
            "recommended",
            "--config",
            str(path),
            "trainer.epochs=1",
            "method.relational_weight=0.5",
            "method.projector_hidden=[32]",
            "eval.align_images=0",
        ]
    )
    run_dir = tmp_path / "runs" / "tiny"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"]["relational"] == "seed" and saved["method"]["relational_weight"] == 0.5
    assert saved["method"]["target_norm"] == "center" and saved["method"]["teacher_view"] == "original"
    assert saved["trainer"]["epochs"] == 1 and saved["trainer"]["ema_horizon"] == 0.05 and "recipe" not in saved
    results = json.loads((run_dir / "results.json").read_text())
    # the copy's time constant is 5 % of the run's optimiser steps: the record says the momentum it came to
    assert results["training"]["ema_momentum"] == pytest.approx(max(0.0, 1 - 1 / (0.05 * results["steps"])))  # 0 under 20 steps
    assert set(results["knn"]) == {"student", "student_ema"}
    with pytest.raises(SystemExit):
        main(["distill", "--recipe", "recommended", "--resume", str(run_dir)])
    assert "drop --recipe" in capsys.readouterr().err


def test_a_time_constant_given_as_a_share_of_the_run_sets_the_momentum_from_the_runs_steps(tmp_path):
    """trainer.ema_horizon=h: the copy's momentum is 1 - 1 / (h x the run's optimiser steps), so an EMA over a tenth of
    a 2-epoch run moves as fast as ema_momentum set to that value by hand (bitwise the same copy)."""
    runs = {}
    for name, trainer in (("share", {"ema_horizon": 0.5}), ("by_hand", None)):
        if trainer is None:  # the momentum the share gave, typed in
            trainer = {"ema_momentum": runs["share"]["training"]["ema_momentum"]}
        raw = tiny_config(tmp_path, trainer={"epochs": 2, **trainer}, run={"dir": str(tmp_path / "runs"), "name": name})
        runs[name] = distill(raw, quiet=True)
    steps = runs["share"]["steps"]
    assert steps > 2 and runs["share"]["training"]["ema_momentum"] == pytest.approx(1 - 1 / (0.5 * steps))
    share, by_hand = (_state(tmp_path / "runs" / n) for n in ("share", "by_hand"))
    assert all(torch.equal(share[k], by_hand[k]) for k in share if k.startswith("ema."))


def test_momentum_and_share_together_are_one_clear_error():
    from ssdistill.config import TrainerConfig

    with pytest.raises(ValueError, match="both set .* trainer.ema_horizon=null"):
        TrainerConfig(ema_momentum=0.99, ema_horizon=0.1)
    assert TrainerConfig(ema_horizon=0.1).ema_momentum_for(1000) == pytest.approx(0.99)
    assert TrainerConfig(ema_horizon=1.0).ema_momentum_for(1) == 0.0 and TrainerConfig().ema_momentum_for(50) is None
