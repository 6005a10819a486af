"""The warning a run gives when a student's input side is a small share of its teacher's (runs.assemble)."""

from __future__ import annotations

from types import SimpleNamespace

from ssdistill.runs.assemble import SIDE_WARNING_SHARE, student_side_warnings


def fake_run(sides: dict[str, int], teacher_side: int = 224, needs: bool = True):
    teacher = SimpleNamespace(name="efficientnet_lite0", preprocess=SimpleNamespace(resolution=teacher_side))
    members = {name: SimpleNamespace(resolution=side) for name, side in sides.items()}
    return SimpleNamespace(
        needs={"signal": object()} if needs else {},
        ctx=SimpleNamespace(teacher=lambda: teacher),
        cfg=None,
        method=SimpleNamespace(student_members=lambda cfg: members),
    )


def test_a_student_far_below_the_teachers_side_is_warned_about_with_what_to_do():
    (line,) = student_side_warnings(fake_run({"student": 64}))
    assert line.startswith("student.resolution=64 is 29% of the teacher's 224 px")
    assert "--resolution 64" in line and "raise student.resolution" in line and "frontier" in line
    assert student_side_warnings(fake_run({"student": 96})) == []  # 43 %: the teacher still has 92.2 % k-NN on Q1 there (80.9 at 64 px)
    assert student_side_warnings(fake_run({"student": 32}, teacher_side=32)) == []  # CIFAR: the teacher's own side
    assert 64 < SIDE_WARNING_SHARE * 224 <= 96


def test_each_member_of_a_cohort_is_checked_and_runs_without_a_teacher_are_not():
    lines = student_side_warnings(fake_run({"student": 128, "peer1": 48}))
    assert len(lines) == 1 and lines[0].startswith("member peer1's input side (48 px) is 21% of")
    assert student_side_warnings(fake_run({"student": 32}, needs=False)) == []
