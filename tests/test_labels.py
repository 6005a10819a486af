"""The naming rule of models and members lives in one ground-floor module (ssdistill/labels.py): rows, loss terms,
monitor columns and EMA members are named by it, and no other module spells the rule out."""

import re

from ssdistill.labels import ema_member, member_suffix, monitor_prefix, student_label, teacher_label

from conftest import REPO


def test_one_student_and_a_cohorts_members_are_named_by_one_rule():
    assert (student_label("student"), student_label("peer1"), student_label("peer1", "random_init")) == (
        "student",
        "student_peer1",
        "random_init_peer1",
    )
    assert (ema_member("student"), ema_member("peer1")) == ("ema", "peer1_ema")
    assert (member_suffix("student"), member_suffix("peer1"), member_suffix("peer1", " ")) == ("", "_peer1", " peer1")
    assert (monitor_prefix("student"), monitor_prefix("peer1")) == ("monitor/", "monitor/peer1/")
    assert (teacher_label("teacher"), teacher_label("lite2")) == ("teacher", "teacher_lite2")


def test_no_module_spells_the_member_rule_out_itself():
    spelled = re.compile(r"""member\s*[!=]=\s*["']student["']|f["']monitor/\{member\}""")
    found = [
        str(path.relative_to(REPO))
        for path in (REPO / "src" / "ssdistill").rglob("*.py")
        if path.name != "labels.py" and spelled.search(path.read_text())
    ]
    assert not found, f"use ssdistill.labels instead of spelling the member rule in {found}"
