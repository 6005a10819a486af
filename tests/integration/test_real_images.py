"""Learning on real images, the demo setting (EfficientNet-Lite0 -> MobileNetV3-Small at 96 px on the 1,000
unlabelled demo images): the demo recipe itself and MV-MR's teacher term alone (MV-MR without a teacher:
test_real_images_ssl.py). One file, so that pytest-xdist (--dist loadfile) runs both on one worker, which embeds the
1,000 images with the teacher once (its teacher cache is per worker). The figures asserted and their seed spread:
benchmarks/results/spread-cpu.md (python -m benchmarks.spread)."""

import csv
import json

from ssdistill import distill

from conftest import REPO, epoch_means


def _epoch_losses(run_dir):
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {int(r["epoch"]): float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")}


def test_smoke_distillation_learns_on_real_images(tmp_path, demo_data):
    """The demo recipe: EfficientNet-Lite0 -> MobileNetV3-Small at 96 px on 1,000 real Imagenette images
    (no labels used in training), 20 epochs."""
    results = distill(
        REPO / "configs" / "demo" / "feature.yaml",
        trainer={"progress_bar": False},
        eval={"teacher": False},
        run={"dir": str(tmp_path), "name": "smoke"},
        quiet=True,
    )
    losses = _epoch_losses(tmp_path / "smoke")
    assert losses[max(losses)] < losses[0] - 0.05
    # the label-free monitor shows learning: the student's linear CKA with the teacher on 256 held-back images rises
    # from the untrained student's (measured on one thread, seeds 0 and 1: 0.119 -> 0.203 and 0.090 -> 0.165, dipping to 0.06-0.08 in epochs 2-3)
    rows = list(csv.DictReader((tmp_path / "smoke" / "metrics.csv").open()))
    start = [float(r["monitor/teacher_cka_start"]) for r in rows if r.get("monitor/teacher_cka_start")]
    every = [float(r["monitor/teacher_cka"]) for r in rows if r.get("monitor/teacher_cka")]
    assert len(start) == 1 and len(every) == 20 and every[-1] >= start[0] + 0.03, (start, every)
    knn = results["knn"]
    # fixed seeds; measured 21.0 -> 39.2 on two threads (seed spread 38.2-42.4), 21.0 -> 36.2 on one thread as the tests
    # run; the demo's acceptance asks for at least +10 points
    assert knn["student"]["top1"] >= knn["random_init"]["top1"] + 10.0, knn
    saved = json.loads((tmp_path / "smoke" / "results.json").read_text())
    assert saved["knn"]["student"]["top1"] == knn["student"]["top1"]
    assert saved["data"]["train_size"] == 1000 and saved["teacher"]["fingerprint"]
    assert saved["machine"]["cpu_model"] and "cpu_vector_extensions" in saved["machine"] and saved["deviations"] == []


def test_mvmr_teacher_term_teaches_the_student_on_real_images(tmp_path, demo_data):
    """MV-MR's distillation term alone (view terms weighted 0), the demo setting: EfficientNet-Lite0 ->
    MobileNetV3-Small at 96 px on 1,000 unlabelled Imagenette images, 20 epochs, bias-corrected dCor. The student
    takes on the teacher's geometry: the term it optimises falls, and on the 500 held-out images its features'
    dCor² with the teacher's rises above the random-init student's.

    k-NN is not asserted: at this scale MV-MR's k-NN lift over random init is noise (seeds 0-3: +7.8, +4.4, +3.6,
    -6.4 points; the random-init student alone spans 20.2-28.6 %), while both figures asserted here are steady
    (benchmarks/results/spread-cpu.md: teacher-term drop 0.159-0.168, dCor² lift 0.085-0.152)."""

    results = distill(
        REPO / "configs" / "demo" / "mvmr_kd.yaml",
        method={"weights": {"mse": 0.0, "std": 0.0, "views": 0.0}},
        optim={"lr": 0.002},
        trainer={"progress_bar": False},
        run={"dir": str(tmp_path), "name": "smoke"},
        quiet=True,
    )
    first, *_, last = epoch_means(tmp_path / "smoke", "teacher")
    assert last < first - 0.1, (first, last)  # 1 - dCor² with the teacher on training batches
    knn = results["knn"]
    student, random_init = (knn[label]["teacher_alignment"]["dcor2"] for label in ("student", "random_init"))
    assert student >= random_init + 0.04, (student, random_init)
