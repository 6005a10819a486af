"""Registry of distillation methods: name -> method class (a ``DistillMethod``)."""

from ssdistill.methods.feature import FeatureDistillation

METHODS = {cls.name: cls for cls in (FeatureDistillation,)}

__all__ = ["METHODS"]
