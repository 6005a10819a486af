"""The engine's default training dataset of a method, and its batch layout.

A method that prepares no dataset of its own gets ``IndexedViews`` over the training images with its
``train_views`` plus the views its online signals read, or, when a signal reads an augmentation bank, the bank's
``BankViews`` (the student's crop replayed from the bank, ``bank_row`` to look the teacher up). Both read the
provider's ``Fulfilment`` of the method's needs."""

from __future__ import annotations

from torch.utils.data import Dataset

from ssdistill.cache.bank import BankViews
from ssdistill.config import DistillConfig
from ssdistill.data.datasets import IndexedViews
from ssdistill.engine.contract import BatchLayout, Fulfilment, Preparation
from ssdistill.engine.provider import TeacherProvider


def _default_views(method: type, cfg: DistillConfig, ctx: TeacherProvider, fulfilment: Fulfilment) -> dict:
    return {**method.train_views(cfg, ctx), **fulfilment.batch_views()}


def build_dataset(method: type, cfg: DistillConfig, ctx: TeacherProvider, fulfilment: Fulfilment) -> Preparation:
    """The method's ``prepare`` hook, then its own dataset or the default one for ``fulfilment`` (``ctx.fulfil`` of
    the method's needs); the returned preparation always holds a dataset."""
    prepared = method.prepare(cfg, ctx) or Preparation()
    if prepared.dataset is None:
        prepared.dataset = default_dataset(method, cfg, ctx, fulfilment)
    return prepared


def default_dataset(method: type, cfg: DistillConfig, ctx: TeacherProvider, fulfilment: Fulfilment) -> Dataset:
    if fulfilment.bank is not None:
        return BankViews(ctx.source, fulfilment.bank.params, fulfilment.bank.repeats, cfg.student.resolution)
    return IndexedViews(ctx.source, _default_views(method, cfg, ctx, fulfilment))


def layout(method: type, cfg: DistillConfig, ctx: TeacherProvider, fulfilment: Fulfilment) -> BatchLayout:
    """What one item of ``build_dataset``'s dataset holds (the method's own layout for a dataset it prepares)."""
    own = method.batch_layout(cfg, ctx)
    if own is not None:
        return own
    if fulfilment.bank is not None:
        rows = len(ctx.source) * fulfilment.bank.repeats
        return BatchLayout({"student": cfg.student.resolution}, ("bank_row",), {"bank_row": rows})
    return BatchLayout({name: view.resolution for name, view in _default_views(method, cfg, ctx, fulfilment).items()})
