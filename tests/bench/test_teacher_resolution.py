"""The teacher-at-the-student's-side diagnostic (benchmarks/teacher_resolution.py): sides already on record are not
measured again, and the table lists them in order of side with the command that regenerates it."""

import json

from benchmarks import teacher_resolution


def test_the_table_orders_the_sides_and_names_its_command(tmp_path):
    assert teacher_resolution.table("q1", tmp_path) is None
    record = {
        "bench": "q1",
        "teacher": "efficientnet_lite0",
        "student_side": 96,
        "rows": {"224": {"top1": 98.2, "top5": 99.9, "gflops": 0.8}, "96": {"top1": 90.5, "top5": 99.0}},
    }
    out = teacher_resolution.path("q1", tmp_path)
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(record))
    lines = teacher_resolution.table("q1", tmp_path).splitlines()
    assert "students see 96 px" in lines[0] and "python -m benchmarks.teacher_resolution --bench q1" in lines[0]
    assert lines[4] == "| 96 px | 90.5 | 99.0 | – |" and lines[5] == "| 224 px | 98.2 | 99.9 | 0.80 |"


def test_sides_on_record_are_not_measured_again(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(**kwargs):
        calls.append(kwargs["resolution"])
        return {kwargs["teacher"]: {"top1": 50.0 + kwargs["resolution"] / 10, "resolution": kwargs["resolution"], "images_per_s": 1.0}}

    monkeypatch.setattr("ssdistill.evaluate", fake_evaluate)
    teacher_resolution.measure("q1", [96, 128], results_dir=tmp_path)
    teacher_resolution.measure("q1", [96, 160], results_dir=tmp_path)
    assert calls == [96, 128, 160]
    rows = json.loads(teacher_resolution.path("q1", tmp_path).read_text())["rows"]
    assert sorted(rows, key=int) == ["96", "128", "160"] and rows["128"]["top1"] == 62.8
    teacher_resolution.measure("q1", [96], force=True, results_dir=tmp_path)
    assert calls == [96, 128, 160, 96]
