"""How models are named everywhere (ground floor, imports nothing): evaluation rows, loss terms, signals, monitor
columns, member names. One student is the member ``student``; a cohort's other members keep their own names; the
engine's EMA copy of a member is a member of its own; the teacher of the ``teacher:`` shorthand is ``teacher``."""

from __future__ import annotations

PRIMARY_STUDENT = "student"  # the member of a one-student run, and a cohort's first member
ENSEMBLE = "ensemble"  # the evaluation row of a cohort's members together (``student_ensemble``); no member is named so
SHORTHAND_TEACHER = "teacher"  # the name of the teacher given by the ``teacher:`` section


def is_primary(member: str) -> bool:
    return member == PRIMARY_STUDENT


def student_label(member: str, prefix: str = "student") -> str:
    """How a student member appears in evaluation rows: ``student`` / ``random_init`` for the one member named
    ``student``, ``student_<name>`` / ``random_init_<name>`` for the members of a cohort."""
    return prefix if is_primary(member) else f"{prefix}_{member}"


def ema_member(member: str) -> str:
    """The member name of the engine's EMA copy of ``member`` (``trainer.ema_momentum``): ``ema`` for the one member
    named ``student`` (evaluation row ``student_ema``), ``<member>_ema`` for a cohort's members."""
    return "ema" if is_primary(member) else f"{member}_ema"


def member_suffix(member: str, separator: str = "_") -> str:
    """What a member adds to a name: nothing for ``student``, ``<separator><member>`` for the others."""
    return "" if is_primary(member) else f"{separator}{member}"


def monitor_prefix(member: str) -> str:
    """The metrics.csv column prefix of a member's monitors: ``monitor/`` for ``student``, ``monitor/<member>/`` else."""
    return "monitor/" if is_primary(member) else f"monitor/{member}/"


def teacher_label(name: str) -> str:
    """How a named teacher appears in evaluation rows, loss terms and signals: ``teacher`` for the shorthand teacher,
    ``teacher_<name>`` for the others."""
    return "teacher" if name == SHORTHAND_TEACHER else f"teacher_{name}"
