"""Gradient accumulation (trainer.accumulate_grad_batches) keeps queue methods correct: one optimiser step spans several
batches, every batch of a step sees the same queue, the step's keys enter the queue together after it, and the
momentum encoder updates once per step."""

import lightning as L
import torch

from integration.common import tiny_config
from ssdistill import distill


class Watch(L.Callback):
    """Before every batch: the optimiser step, the queue pointer, one key-encoder weight and the batch's image ids."""

    def __init__(self) -> None:
        self.rows = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        weight = next(module.key_encoder.parameters()).detach().clone()
        self.rows.append((batch_idx, trainer.global_step, int(module.queue.pointer), weight, batch["index"].clone()))


def test_queue_and_momentum_encoder_advance_once_per_optimiser_step(tmp_path):
    config = tiny_config(tmp_path, data={"batch_size": 8}, trainer={"epochs": 1, "accumulate_grad_batches": 2})
    config["method"] = {"name": "moco", "out_dim": 16, "queue_size": 64, "momentum": 0.9}
    watch = Watch()
    results = distill(config, callbacks=[watch], quiet=True)
    assert results["steps"] == 4 and len(watch.rows) == 8  # 64 images, batches of 8, two batches a step
    assert results["training"]["accumulate_grad_batches"] == 2 and results["training"]["images_per_optimiser_step"] == 16
    for batch_idx, step, pointer, _, _ in watch.rows:
        assert step == batch_idx // 2 and pointer == 16 * (batch_idx // 2) % 64  # both batches of a step saw one queue
    for k in range(1, 4):  # the key encoder moves during the first batch of a step, never during the second
        assert not torch.equal(watch.rows[2 * k][3], watch.rows[2 * k + 1][3])
        assert torch.equal(watch.rows[2 * k - 1][3], watch.rows[2 * k][3])
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    ids = state["queue.ids"]
    for k in range(4):  # slot block k holds the keys of step k: the ids of both of its batches, in batch order
        expected = torch.cat([watch.rows[2 * k][4], watch.rows[2 * k + 1][4]])
        assert torch.equal(ids[16 * k:16 * (k + 1)], expected)
    assert int(state["queue.pointer"]) == 0  # 4 steps x 16 keys wrapped a 64-key queue once
