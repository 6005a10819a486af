"""ssdistill: label-free distillation of large pretrained vision models into small fast students."""

from ssdistill._version import __version__


def distill(*args, **kwargs):
    """See :func:`ssdistill.api.distill`."""
    from ssdistill.api import distill as _distill

    return _distill(*args, **kwargs)


def evaluate(*args, **kwargs):
    """See :func:`ssdistill.api.evaluate`."""
    from ssdistill.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["__version__", "distill", "evaluate"]
