"""Gradient accumulation (trainer.accumulate_grad_batches) keeps queue methods correct: one optimiser step spans several
batches, every batch of a step sees the same queue, the step's keys enter the queue together after it, and the
momentum encoder updates once per step."""

import lightning as L
import pytest
import torch

from ssdistill import distill

from integration.common import tiny_config


class Watch(L.Callback):
    """Before every batch: the optimiser step, the queue pointer, one key-encoder weight and the batch's image ids."""

    def __init__(self) -> None:
        self.rows = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        weight = next(module.key_encoder.parameters()).detach().clone()
        self.rows.append((batch_idx, trainer.global_step, int(module.queue.pointer), weight, batch["index"].clone()))


def test_queue_and_momentum_encoder_advance_once_per_optimiser_step(tmp_path):
    """64 images in batches of 8, three batches a step: steps of batches (0, 1, 2), (3, 4, 5) and the partial (6, 7)."""
    config = tiny_config(tmp_path, data={"batch_size": 8}, trainer={"epochs": 1, "accumulate_grad_batches": 3, "log_every_n_steps": 1})
    config["method"] = {"name": "moco", "out_dim": 16, "queue_size": 64, "momentum": 0.9}
    watch = Watch()
    results = distill(config, callbacks=[watch], quiet=True)
    cycles = [(0, 1, 2), (3, 4, 5), (6, 7)]
    assert results["steps"] == 3 and len(watch.rows) == 8
    assert results["training"]["accumulate_grad_batches"] == 3 and results["training"]["images_per_optimiser_step"] == 24
    pointer = 0
    for step, cycle in enumerate(cycles):
        for b in cycle:  # every batch of a step saw the queue as the previous step left it
            assert watch.rows[b][1] == step and watch.rows[b][2] == pointer
        pointer += 8 * len(cycle)
    for cycle in cycles[1:]:  # the key encoder moves during a step's first batch, never later in it
        assert not torch.equal(watch.rows[cycle[0]][3], watch.rows[cycle[1]][3])
        assert torch.equal(watch.rows[cycle[1]][3], watch.rows[cycle[-1]][3])
    state = torch.load(tmp_path / "runs" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    ids, start = state["queue.ids"], 0
    for cycle in cycles:  # each step's keys in consecutive slots: the ids of its batches, in batch order
        expected = torch.cat([watch.rows[b][4] for b in cycle])
        assert torch.equal(ids[start : start + len(expected)], expected)
        start += len(expected)
    assert int(state["queue.pointer"]) == 0  # 64 keys filled the 64-key queue once
    # the schedule counts optimiser steps: warm-up (1 epoch = 3 steps, the partial one included) ends at the last step
    import csv

    rates = [float(row["train/lr"]) for row in csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")) if row.get("train/lr")]
    assert rates == pytest.approx([0.05 / 3, 0.1 / 3, 0.05])  # counting batches, warm-up would last 8 steps
