"""Teacher signals by sample index. A method asks ``signal(index, images)`` and does not care whether
the answer is computed online by the teacher or read from a precomputed table."""

from ssdistill.cache.signals import OnlineSignal, TableSignal, TeacherSignal

__all__ = ["OnlineSignal", "TableSignal", "TeacherSignal"]
