"""The engine's default training dataset of a method, and its batch layout.

A method that prepares no dataset of its own gets ``IndexedViews`` over the training images with its
``train_views`` plus the views its online signals read, or, when a signal reads an augmentation bank, the bank's
``BankViews`` (the student's crop replayed from the bank, ``bank_row`` to look the teacher up)."""

from __future__ import annotations

from torch.utils.data import Dataset

from ssdistill.cache.bank import BankViews
from ssdistill.config import DistillConfig
from ssdistill.data.datasets import IndexedViews
from ssdistill.engine.contract import BatchLayout, Preparation
from ssdistill.engine.provider import TeacherProvider


def _default_views(method: type, cfg: DistillConfig, ctx: TeacherProvider) -> dict:
    return {**method.train_views(cfg, ctx), **ctx.batch_views()}


def build_dataset(method: type, cfg: DistillConfig, ctx: TeacherProvider) -> Preparation:
    """The method's ``prepare`` hook, then its own dataset or the default one (the returned preparation always holds a
    dataset); after ``ctx.fulfil``."""
    prepared = method.prepare(cfg, ctx) or Preparation()
    if prepared.dataset is None:
        prepared.dataset = default_dataset(method, cfg, ctx)
    return prepared


def default_dataset(method: type, cfg: DistillConfig, ctx: TeacherProvider) -> Dataset:
    if ctx.bank_params is not None:
        params, repeats = ctx.bank_params
        return BankViews(ctx.source, params, repeats, cfg.student.resolution)
    return IndexedViews(ctx.source, _default_views(method, cfg, ctx))


def layout(method: type, cfg: DistillConfig, ctx: TeacherProvider) -> BatchLayout:
    """What one item of ``build_dataset``'s dataset holds (the method's own layout for a dataset it prepares)."""
    own = method.batch_layout(cfg, ctx)
    if own is not None:
        return own
    if ctx.bank_params is not None:
        _, repeats = ctx.bank_params
        return BatchLayout({"student": cfg.student.resolution}, ("bank_row",), {"bank_row": len(ctx.source) * repeats})
    return BatchLayout({name: view.resolution for name, view in _default_views(method, cfg, ctx).items()})
