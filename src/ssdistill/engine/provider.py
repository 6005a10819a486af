"""The teacher provider: builds a run's named teachers on demand and fulfils every ``TeacherNeed`` a method declares,
from the teacher cache or online. It is also the context a method prepares its training data with (``prepare``):
cache-backed features, neighbour bags, k-means and augmentation banks of any named teacher, the device and the
sources, so that no method threads cache arguments by hand.

Where a need is fulfilled is decided here and only here: ``original`` needs are read from the cache (or computed
once) when ``teacher.precompute``, else computed in the step on a view the dataset adds to the batch; ``augmented``
needs run the teacher online; ``bank`` needs read an augmentation bank (recorded under ``approximations``). ``fulfil``
returns all of it as one ``Fulfilment``; the provider keeps nothing of it but private caches of the tables it read, so
that a method's ``prepare`` reading the same table (``features``, ``bank``) gets the same tensor.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ssdistill.cache.bank import cached_teacher_bank
from ssdistill.cache.fill import cached_teacher_features, filled_teacher_entry
from ssdistill.cache.neighbours import cached_kmeans, cached_neighbours, cached_subset_kmeans
from ssdistill.cache.signals import OnlineSignal, TableSignal, TeacherSignal
from ssdistill.cache.store import Entry
from ssdistill.config import DistillConfig, TeacherConfig
from ssdistill.data.datasets import ImageSource, open_images
from ssdistill.data.sampling import SeededItems
from ssdistill.engine.contract import Bank, Fulfilment, TeacherNeed
from ssdistill.errors import ConfigError
from ssdistill.eval.features import ViewedImages, extract_features, model_outputs
from ssdistill.models.teachers import FrozenTeacher, build_teacher


def open_split(cfg: DistillConfig, spec: str) -> ImageSource:
    """An image source of the run's data settings (root, download, skip_corrupt)."""
    data = cfg.data
    return open_images(spec, data.root, data.download, data.skip_corrupt)


class TeacherProvider:
    """``cfg`` the run's config, ``source`` its training images (``data.train`` after ``train_subset``)."""

    def __init__(self, cfg: DistillConfig, source: ImageSource, device: torch.device | str = "cpu") -> None:
        self.cfg, self.source, self.device = cfg, source, torch.device(device)
        self._teachers: dict[tuple[str, str], FrozenTeacher] = {}
        self._tables: dict[tuple[str, str, str], torch.Tensor] = {}
        self._derived: set[tuple[str, str, str]] = set()  # keys of the logits tables derived from a pooled entry
        self._banks: dict[tuple, tuple[torch.Tensor, np.ndarray, bool]] = {}  # bank tables read, by their arguments

    # ----- teachers ----------------------------------------------------------------------------------
    def teacher_config(self, name: str | None = None) -> TeacherConfig:
        name = name or self.cfg.primary_teacher
        if name not in self.cfg.teachers:
            raise ConfigError(f"no teacher named '{name}': this run's teachers are {', '.join(self.cfg.teachers)}")
        return self.cfg.teachers[name]

    def teacher(self, name: str | None = None, tap: str | None = None) -> FrozenTeacher:
        """The frozen teacher ``name`` (default: the primary) with output ``tap`` (default: its configured one)."""
        cfg = self.teacher_config(name)
        tap = tap or cfg.output
        key = (name or self.cfg.primary_teacher, tap)
        if key not in self._teachers:
            self._teachers[key] = build_teacher(cfg if tap == cfg.output else cfg.model_copy(update={"output": tap}))
        return self._teachers[key]

    # ----- cache-backed preparation ------------------------------------------------------------------
    def open(self, spec: str) -> ImageSource:
        return open_split(self.cfg, spec)

    def features(self, name: str | None = None, spec: str | None = None, source: ImageSource | None = None, tap: str | None = None) -> torch.Tensor:
        """The teacher's outputs [N, D] of the original view of every image of ``spec`` (default: the training
        images), in dataset order: from the disk cache when it is on (filled on first use), else computed; kept for
        the rest of the run. With the cache on, a logits table whose logits are exactly the teacher's classifier of its
        pooled output is that classifier applied to the pooled entry: one fill serves both taps."""
        teacher = self.teacher(name, tap)
        spec = spec or self.cfg.data.train
        key = (name or self.cfg.primary_teacher, teacher.output, spec)
        if key not in self._tables:
            if source is None:
                source = self.source if spec == self.cfg.data.train else self.open(spec)
            data, cache = self.cfg.data, self.cfg.cache
            if cache.enabled:
                filled, head = self._filled_tap(name, teacher)
                table = cached_teacher_features(filled, source, spec, data.eval_batch_size, data.num_workers, self.device, cache.dir, cache.dtype)
                if head is not None:
                    table = _through(head, table)
                    self._derived.add(key)
            else:
                table = extract_features(teacher, source, teacher.original_view(), data.eval_batch_size, data.num_workers, self.device, "teacher")
            self._tables[key] = table
        return self._tables[key]

    def _filled_tap(self, name: str | None, teacher: FrozenTeacher) -> tuple[FrozenTeacher, nn.Module | None]:
        """The teacher whose outputs the cache holds for ``teacher``'s tap, and the head to apply to them: a logits tap
        whose logits are exactly the classifier of the pooled output reads the pooled entry through that classifier
        (one fill serves both taps); any other tap reads its own entry (head None)."""
        head = teacher.classifier_of_pooled() if teacher.output == "logits" else None
        return (self.teacher(name, "pooled"), head) if head is not None else (teacher, None)

    def _cache_needed(self, what: str) -> None:
        if not self.cfg.cache.enabled:
            raise ConfigError(f"{what} reads the teacher cache: set cache.enabled=true")

    def entry(self, name: str | None = None, what: str = "this method", tap: str | None = None) -> Entry:
        """The complete cache entry of the teacher's original-view outputs (``tap``, default its configured one) over the
        training images."""
        self._cache_needed(what)
        data, cache = self.cfg.data, self.cfg.cache
        return filled_teacher_entry(
            self.teacher(name, tap), self.source, data.train, data.eval_batch_size, data.num_workers, self.device, cache.dir, cache.dtype
        )

    def neighbours(self, k: int, name: str | None = None, what: str = "neighbour bags", backend: str = "torch") -> torch.Tensor:
        """[N, k] exact cosine nearest neighbours (self excluded) of each training image in the teacher's space,
        computed once (``backend``: torch, or faiss's exact inner-product index) and stored beside the cache entry."""
        if k >= len(self.source):
            raise ConfigError(f"{what}: {k} neighbours need more than {len(self.source)} training images")
        return cached_neighbours(self.entry(name, what), k, device=self.device, backend=backend).cpu()

    def kmeans(self, k: int, seed: int = 0, name: str | None = None, what: str = "k-means") -> tuple[torch.Tensor, torch.Tensor]:
        """Spherical k-means of the teacher's training features: (labels [N], centroids [k, D]), stored beside the entry."""
        return cached_kmeans(self.entry(name, what), k, seed=seed, device=self.device)

    def task_kmeans(self, rows: torch.Tensor, k: int, seed: int = 0, restarts: int = 10, name: str | None = None) -> torch.Tensor:
        """Centroids [k, D] of spherical k-means (best of ``restarts``) on the teacher's cached pooled features of the
        training images ``rows`` only (one task's data), stored beside the cache entry."""
        return cached_subset_kmeans(self.entry(name, "k-means task heads", tap="pooled"), rows, k, seed, restarts, self.device)

    def bank(
        self,
        repeats: int,
        name: str | None = None,
        what: str = "a teacher augmentation bank",
        tap: str | None = None,
        crop_scale: tuple[float, float] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Teacher outputs [N * R, D] (``tap``) of R fixed augmented views per training image and their parameters
        [N * R, P]; the views are drawn with ``aug``, its crop area range replaced by ``crop_scale`` when given. Read
        once from the cache (filled on first use) and kept for the rest of the run."""
        table, params, _ = self._bank(repeats, name, what, tap, crop_scale)
        return table, params

    def _bank(
        self,
        repeats: int,
        name: str | None,
        what: str,
        tap: str | None,
        crop_scale: tuple[float, float] | None,
    ) -> tuple[torch.Tensor, np.ndarray, bool]:
        """``bank()`` and whether its logits were derived from the pooled bank through the teacher's classifier."""
        self._cache_needed(what)
        key = (name or self.cfg.primary_teacher, self.teacher(name, tap).output, repeats, crop_scale)
        if key not in self._banks:
            self._banks[key] = self._read_bank(repeats, name, tap, crop_scale)
        return self._banks[key]

    def _read_bank(
        self,
        repeats: int,
        name: str | None,
        tap: str | None,
        crop_scale: tuple[float, float] | None,
    ) -> tuple[torch.Tensor, np.ndarray, bool]:
        data, cache, aug = self.cfg.data, self.cfg.cache, self.cfg.aug
        if crop_scale is not None:
            aug = aug.model_copy(update={"crop_scale_min": crop_scale[0], "crop_scale_max": crop_scale[1]})
        teacher, head = self._filled_tap(name, self.teacher(name, tap))
        table, params = cached_teacher_bank(
            teacher,
            self.source,
            data.train,
            aug,
            repeats,
            self.cfg.trainer.seed,
            data.eval_batch_size,
            data.num_workers,
            self.device,
            cache.dir,
            cache.dtype,
        )
        if head is not None:
            table = _through(head, table)
        return table, params, head is not None

    def mean_output(
        self,
        view: Callable,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str | None = None,
        tap: str | None = None,
    ) -> torch.Tensor:
        """The mean over the training images of ``transform`` (on the device, batch by batch; default: none) of the
        teacher's outputs (``tap``) on ``view`` of each image, in one pass. Each image's view is drawn after seeding every
        generator from (``trainer.seed``, image), as the training loader seeds its items (``SeededItems``): the mean is the
        same whatever ``data.num_workers`` and whatever the global RNG drew before (a cold cache fill)."""
        data = self.cfg.data
        items = SeededItems(ViewedImages(self.source, view), self.cfg.trainer.seed)
        total, count = None, 0
        with torch.no_grad():
            for out in model_outputs(self.teacher(name, tap), items, data.eval_batch_size, data.num_workers, self.device, "teacher mean"):
                rows = (out if transform is None else transform(out)).cpu()
                total = rows.sum(0) if total is None else total + rows.sum(0)
                count += len(rows)
        return total / count

    # ----- fulfilling needs --------------------------------------------------------------------------
    def fulfil(self, needs: dict[str, TeacherNeed]) -> Fulfilment:
        """One signal per need, by need name, with how each was fulfilled, the approximations, the bank a need reads and
        the seconds the precomputed signals took (``Fulfilment``; its ``batch_views()`` lists the views the dataset must
        add)."""
        start, precomputed = time.perf_counter(), False
        signals: dict[str, TeacherSignal] = {}
        records: dict[str, dict] = {}
        approximations: list[str] = []
        bank = None
        banks = [need for need in needs.values() if need.view == "bank"]
        if len(banks) > 1:
            raise ConfigError("one augmentation bank per run: the student replays one bank's crops; use teacher_view=original or same for the others")
        for name, need in needs.items():
            teacher_name = need.teacher or self.cfg.primary_teacher
            precompute = self.teacher_config(teacher_name).precompute
            teacher = self.teacher(teacher_name, need.tap)
            if need.view == "original" and precompute:
                source = None if need.subset is None else self.open(need.subset)
                signal: TeacherSignal = TableSignal(self.features(teacher_name, need.subset, source, need.tap), teacher.fingerprint)
                how, precomputed = "cache" if self.cfg.cache.enabled else "computed once", True
                if (teacher_name, teacher.output, need.subset or self.cfg.data.train) in self._derived:
                    how = "cache (pooled outputs, through the teacher's classifier)"
            elif need.view == "original":
                if need.subset is not None:
                    raise ConfigError(f"the teacher signal '{name}' covers {need.subset}: it needs teacher.precompute=true")
                signal, how = OnlineSignal(teacher, batch_view=f"{name}:original"), "online"
            elif need.view == "augmented":
                signal, how = OnlineSignal(teacher), "online"
            else:
                table, params, derived = self._bank(need.repeats, teacher_name, f"the teacher signal '{name}' (bank)", need.tap, need.crop_scale)
                how = "cache (bank of pooled outputs, through the teacher's classifier)" if derived else "cache (bank)"
                signal, precomputed = TableSignal(table, teacher.fingerprint, index_key="bank_row"), True
                bank = Bank(params, need.repeats)
                approximations.append(f"teacher_bank({need.repeats})")
            signals[name] = signal
            records[name] = {
                "teacher": teacher_name,
                "view": need.view,
                "tap": teacher.output,
                "fingerprint": signal.fingerprint,
                "from": how,
                **({"repeats": need.repeats} if need.repeats else {}),
                **({"crop_scale": list(need.crop_scale)} if need.crop_scale else {}),
                **({"subset": need.subset} if need.subset else {}),
            }
        seconds = time.perf_counter() - start if precomputed else None
        return Fulfilment(signals, records, tuple(approximations), bank, seconds)


def _through(head: nn.Module, table: torch.Tensor) -> torch.Tensor:
    """``head`` (the teacher's classifier) applied to a cached table of pooled outputs, in chunks, kept in its dtype."""
    with torch.no_grad():
        device = next(head.parameters(), torch.empty(0)).device
        return torch.cat([head(rows.to(device, torch.float32)).to("cpu", table.dtype) for rows in table.split(4096)])
