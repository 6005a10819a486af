from ssdistill.engine.module import DistillMethod
from ssdistill.engine.schedule import warmup_cosine
from ssdistill.engine.trainer import build_trainer

__all__ = ["DistillMethod", "warmup_cosine", "build_trainer"]
