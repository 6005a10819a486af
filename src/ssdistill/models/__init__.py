from ssdistill.models.heads import mlp
from ssdistill.models.students import Student
from ssdistill.models.teachers import BUILTIN_TEACHERS, FrozenTeacher, build_teacher

__all__ = ["mlp", "Student", "BUILTIN_TEACHERS", "FrozenTeacher", "build_teacher"]
