"""trainer.precision=bf16-mixed trains on the CPU: the student's layers really compute in bfloat16 under autocast,
its weights stay float32, a queue method stays finite, and the run record says which precision was used."""

import csv
import math

import lightning as L
import pytest
import torch

from integration.common import tiny_config
from ssdistill import distill


class Dtypes(L.Callback):
    """The dtype of the student's first convolution output during training steps."""

    def __init__(self) -> None:
        self.seen = set()

    def on_train_start(self, trainer, module) -> None:
        conv = next(m for m in module.students()["student"].modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda mod, args, out: self.seen.add(out.dtype) if mod.training else None)


@pytest.mark.parametrize("method", [{"name": "feature", "projector_hidden": [32]}, {"name": "moco", "out_dim": 16, "queue_size": 64}])
def test_bf16_mixed_trains_on_cpu_in_bfloat16_with_float32_weights(tmp_path, method):
    config = tiny_config(tmp_path, trainer={"epochs": 1, "precision": "bf16-mixed", "log_every_n_steps": 1}, student={"channels_last": True})
    config["method"] = method
    dtypes = Dtypes()
    results = distill(config, callbacks=[dtypes], quiet=True)
    assert dtypes.seen == {torch.bfloat16}
    losses = [float(row["train/loss_step"]) for row in csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")) if row["train/loss_step"]]
    assert len(losses) == results["steps"] and all(math.isfinite(loss) for loss in losses)
    assert results["training"]["precision"] == "bf16-mixed" and results["training"]["student_channels_last"] == {"student": True}
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(v.dtype == torch.float32 for k, v in state.items() if k.startswith("student.") and v.is_floating_point())
