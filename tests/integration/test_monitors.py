"""What a user without labels sees while a run trains: the student's linear CKA with the teacher on fixed held-back
images after every epoch (logged), images/s and the share of time spent waiting for data (progress bar)."""

import csv

import lightning as L

from ssdistill import distill

from integration.common import tiny_config


class ProgressBarMetrics(L.Callback):
    def __init__(self) -> None:
        self.seen = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seen.append(dict(trainer.progress_bar_metrics))


def test_alignment_with_the_teacher_is_logged_at_the_start_and_after_every_epoch(tmp_path):
    """The mechanics, on a tiny random teacher (nothing to learn from it: whether the curve rises is asserted on real
    images, in tests/integration/test_real_images.py's demo run)."""
    seen = ProgressBarMetrics()
    config = tiny_config(tmp_path, trainer={"epochs": 4, "progress_bar": True}, method={"loss": "mse"}, eval={"align_images": 256})
    results = distill(config, callbacks=[seen], quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")))
    cka = [(int(row["epoch"]), float(row["monitor/teacher_cka"])) for row in rows if row.get("monitor/teacher_cka")]
    start = [(int(row["epoch"]), float(row["monitor/teacher_cka_start"])) for row in rows if row.get("monitor/teacher_cka_start")]
    assert [epoch for epoch, _ in cka] == [0, 1, 2, 3] and all(0 < value <= 1 for _, value in cka)
    assert len(start) == 1 and start[0][0] == 0 and 0 < start[0][1] <= 1 and start[0][1] != cka[0][1]  # before any step
    bar = seen.seen[-1]
    assert 0 < bar["img/s"] and 0 <= bar["data_wait"] <= 1 and "monitor/teacher_cka" in seen.seen[-1] | seen.seen[4]
    assert not any("teacher_cka_start" in metrics for metrics in seen.seen)  # the baseline stays off the bar
    assert "img/s" not in rows[0] and "data_wait" not in rows[0]  # timings stay out of the reproducible logs
    assert results["steps"] == 16


def test_a_resumed_run_does_not_log_a_second_start(tmp_path):
    config = tiny_config(tmp_path, trainer={"epochs": 1}, eval={"align_images": 64})
    distill(config, quiet=True)
    distill(resume=tmp_path / "runs" / "tiny", overrides=["trainer.epochs=2"], quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "tiny" / "metrics.csv")))
    assert len([row for row in rows if row.get("monitor/teacher_cka_start")]) == 1
    assert len([row for row in rows if row.get("monitor/teacher_cka")]) == 2


def test_without_val_the_monitor_aligns_on_fixed_training_images_and_can_be_turned_off(tmp_path):
    """No data.val and fewer training images (a 64-image subset of 1,000) than eval.align_images: all 64 are used."""
    distill(tiny_config(tmp_path, trainer={"epochs": 2}, data={"val": None}, eval={"align_images": 256}, run={"name": "noval"}), quiet=True)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "noval" / "metrics.csv")))
    assert len([row for row in rows if row.get("monitor/teacher_cka")]) == 2
    distill(tiny_config(tmp_path, trainer={"epochs": 1}, eval={"align_images": 0}), quiet=True)
    header = next(csv.reader(open(tmp_path / "runs" / "tiny" / "metrics.csv")))
    assert not any(column.startswith("monitor/") for column in header)
