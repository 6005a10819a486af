"""Registry of distillation methods: name -> method class (a ``DistillMethod``)."""

from ssdistill.methods.feature import FeatureDistillation
from ssdistill.methods.mvmr import MVMR

METHODS = {cls.name: cls for cls in (FeatureDistillation, MVMR)}

__all__ = ["METHODS"]
