"""CKA, contrastive knowledge amalgamation (docs/methods/cka.md; "CKA (ssdistill reconstruction)": the paper's formulas are not
public, every term is switchable). Several teachers, each with its own unsupervised classification task on its own
data, are amalgamated into one student that solves all the tasks.

* Tasks are data: ``method.tasks: {name: {data, val, teacher, head, classes}}``. The training set is the union of the
  tasks' data (``training_source``); every image carries its task id (the folder it comes from, not a class label).
* A teacher's task head is ``kmeans`` (spherical k-means, best of ``kmeans_restarts`` seeded runs, on the teacher's
  cached original-view features of its own task's images; logits = cosine to the centroids / ``kmeans_temperature``)
  or ``classifier`` (the teacher's own logits restricted to the task's class subset ``classes``). Teacher features,
  logits and pseudo-labels are computed from the cache once, before training: no teacher runs during training.
* The student: backbone, one head per task (Linear on the pooled features), and a common-space projector
  P_s = E ∘ A_s; each teacher has its own adapter A_t (and decoder D_t when the reconstruction term is on) into the
  same shared E. Adapters, E and decoders train on the cached teacher features.
* Losses (``losses/amalgamation.py``): task-level KL_T, intra and inter contrast, sample-level alignment, optional CFL
  reconstruction; the collapse guard (mean pairwise cosine of each teacher's common-space embeddings) is logged.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.nn import functional as F

from ssdistill.config import DistillConfig, MethodConfig, Section
from ssdistill.data.datasets import IndexedViews, UnionImages
from ssdistill.data.views import augmented_view, original_view
from ssdistill.engine.contract import BatchLayout, Preparation, TeacherNeed
from ssdistill.engine.module import DistillMethod
from ssdistill.errors import ConfigError, DataError
from ssdistill.eval.classes import RelabelledImages, align_classes
from ssdistill.eval.clustering import cluster_metrics, hungarian_accuracy, kmeans_clustering, task_clustering
from ssdistill.eval.features import extract_features
from ssdistill.eval.knn import knn_accuracy
from ssdistill.labels import teacher_label
from ssdistill.losses.amalgamation import alignment, inter_contrast, intra_contrast, mean_pairwise_cosine, reconstruction, task_distillation
from ssdistill.models.heads import mlp

TERMS = ("task", "intra", "inter", "align", "rec")


class TaskConfig(Section):
    data: str | list[str] = Field(description="the task's training images: an image folder or dataset name, or a list of them")
    val: str | None = Field(None, description="the task's labelled evaluation split (per-task clustering accuracy, NMI, ARI)")
    teacher: str = Field(description="the name of the teacher (a key of teachers) whose task this is")
    head: Literal["kmeans", "classifier"] = Field(
        "kmeans",
        description="kmeans: spherical k-means on the teacher's features of the task's images; classifier: the "
        "teacher's own logits restricted to `classes`",
    )
    classes: int | list[int] = Field(
        description="kmeans: the number of pseudo-classes C_t; classifier: the teacher's class indices that make up the task"
    )

    @model_validator(mode="after")
    def _classes_fit_the_head(self) -> TaskConfig:
        if self.head == "kmeans" and not (isinstance(self.classes, int) and self.classes >= 2):
            raise ValueError("a kmeans task head needs classes: the number of pseudo-classes (2 or more)")
        if self.head == "classifier" and not (isinstance(self.classes, list) and len(set(self.classes)) >= 2):
            raise ValueError("a classifier task head needs classes: a list of 2 or more of the teacher's class indices")
        return self

    @property
    def size(self) -> int:
        return self.classes if isinstance(self.classes, int) else len(self.classes)


class CKAConfig(MethodConfig):
    name: Literal["cka"] = "cka"
    tasks: dict[str, TaskConfig] = Field(default_factory=dict, description="{task name: {data, val, teacher, head, classes}}")
    weights: dict[str, float] = Field(
        default_factory=dict, description=f"weight of each loss term ({', '.join(TERMS)}); default 1, rec 0 (off); 0 turns a term off"
    )
    align: Literal["cosine", "mmd", "relational"] = Field("cosine", description="sample-level alignment in the common space")
    task_targets_on: Literal["own", "all"] = Field("own", description="each head distils its teacher on its own task's images, or on all")
    temperature: float = Field(0.1, gt=0, description="τ of the intra and inter InfoNCE terms (and of the relational alignment)")
    kd_temperature: float = Field(4.0, gt=0, description="T of the task-level KL")
    kmeans_temperature: float = Field(0.1, gt=0, description="τ_km: k-means task logits = cosine to the centroids / τ_km")
    kmeans_restarts: int = Field(10, ge=1, description="seeded k-means runs per task head (the best is kept)")
    kmeans_seed: int = Field(0, description="seed of the k-means task heads (fixed: the tasks do not change with trainer.seed)")
    adapter_dim: int = Field(256, gt=0, description="width of the adapters A into the shared extractor E")
    common_dim: int = Field(128, gt=0, description="width of the common space")
    decoder_hidden: int = Field(512, gt=0, description="hidden width of the reconstruction decoders D_t")
    student_view: Literal["strong", "weak", "original"] = Field(
        "strong", description="the student's view: strong (the aug section), weak (crop and flip only) or original"
    )

    @field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; terms are {', '.join(TERMS)}")
        return weights

    def weight(self, term: str) -> float:
        return self.weights.get(term, 0.0 if term == "rec" else 1.0)


def _tasks(cfg: DistillConfig) -> dict[str, TaskConfig]:
    tasks = cfg.method.tasks
    if not tasks:
        raise ConfigError("method cka needs method.tasks: {name: {data: FOLDER, teacher: NAME, head: kmeans, classes: C}, ...}")
    unknown = sorted({t.teacher for t in tasks.values()} - set(cfg.teachers))
    if unknown:
        raise ConfigError(f"method.tasks names teacher(s) {', '.join(unknown)}, but this run's teachers are {', '.join(cfg.teachers)}")
    return tasks


class CKA(DistillMethod):
    name = "cka"
    config_class = CKAConfig
    label = "CKA (ssdistill reconstruction)"
    description = "CKA (ssdistill reconstruction): teachers with their own unsupervised tasks amalgamated into one student"

    def __init__(self, cfg, students, signals, **context) -> None:
        super().__init__(cfg, students, signals, **context)
        m, tasks = cfg.method, _tasks(cfg)
        self.task_names = list(tasks)
        self.task_teachers = [t.teacher for t in tasks.values()]
        teachers = list(dict.fromkeys(self.task_teachers))
        self.heads = nn.ModuleList(nn.Linear(self.student.dim, t.size) for t in tasks.values())
        self.student_adapter = self._adapter(self.student.dim)
        self.teacher_adapters = nn.ModuleDict({name: self._adapter(self.signals[teacher_label(name)].dim) for name in teachers})
        self.extractor = mlp([m.adapter_dim, m.adapter_dim, m.common_dim], bn="none")
        if m.weight("rec") > 0:
            self.decoders = nn.ModuleDict(
                {name: mlp([m.common_dim, m.decoder_hidden, self.signals[teacher_label(name)].dim], bn="none") for name in teachers}
            )

    def _adapter(self, dim: int) -> nn.Module:
        return nn.Sequential(nn.Linear(dim, self.cfg.method.adapter_dim), nn.BatchNorm1d(self.cfg.method.adapter_dim), nn.ReLU())

    # ----- declarations --------------------------------------------------------------------------
    @classmethod
    def training_source(cls, cfg: DistillConfig, open_split) -> UnionImages:
        parts = {}
        for name, task in _tasks(cfg).items():
            specs = [task.data] if isinstance(task.data, str) else list(task.data)
            sources = [open_split(spec) for spec in specs]
            parts[name] = sources[0] if len(sources) == 1 else UnionImages({spec: s for spec, s in zip(specs, sources)})
        union = UnionImages(parts)
        union.description = "union of " + ", ".join(f"{name}: {task.data}" for name, task in _tasks(cfg).items())
        return union

    @classmethod
    def evaluation_source(cls, cfg: DistillConfig, open_split) -> UnionImages | None:
        """The union of the tasks' evaluation splits (k-NN on the union), when every task has one."""
        tasks = _tasks(cfg)
        if any(task.val is None for task in tasks.values()):
            return None
        return UnionImages({name: open_split(task.val) for name, task in tasks.items()})

    @classmethod
    def teacher_needs(cls, cfg: DistillConfig) -> dict[str, TeacherNeed]:
        """Each task's teacher's pooled features of the original view of every training image (cached)."""
        teachers = dict.fromkeys(task.teacher for task in _tasks(cfg).values())
        return {teacher_label(name): TeacherNeed(view="original", teacher=name, tap="pooled") for name in teachers}

    @classmethod
    def train_views(cls, cfg: DistillConfig, ctx) -> dict:
        return {"student": cls._student_view(cfg)}

    @classmethod
    def _student_view(cls, cfg: DistillConfig):
        r, m = cfg.student.resolution, cfg.method
        if m.student_view == "original":
            return original_view(r)
        if m.student_view == "weak":
            return augmented_view(r, cfg.aug.model_copy(update={"color_jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}))
        return augmented_view(r, cfg.aug)

    @classmethod
    def prepare(cls, cfg: DistillConfig, ctx) -> Preparation:
        """The task logits of every training image under each task's teacher head (cached features, cached k-means),
        their pseudo-labels, and a dataset whose items carry their task id."""
        online = [task.teacher for task in _tasks(cfg).values() if not cfg.teachers[task.teacher].precompute]
        if online:
            raise ConfigError(f"cka reads every teacher's features of every image before training: set teachers.{online[0]}.precompute=true")
        parts = torch.tensor(ctx.source.parts)
        tensors = {}
        for t, task in enumerate(_tasks(cfg).values()):
            tensors[f"logits_{t}"] = cls.teacher_task_logits(cfg, ctx, task, parts == t, spec=None)
            tensors[f"pseudo_{t}"] = tensors[f"logits_{t}"].argmax(1)
        tensors["task"] = parts
        dataset = IndexedViews(ctx.source, {"student": cls._student_view(cfg)}, extras={"task": ctx.source.parts})
        return Preparation(dataset=dataset, tensors=tensors)

    @classmethod
    def teacher_task_logits(cls, cfg: DistillConfig, ctx, task: TaskConfig, rows: torch.Tensor, spec: str | None) -> torch.Tensor:
        """[N, C_t] task logits of teacher ``task.teacher`` for the images of ``spec`` (None: the training images);
        the k-means centroids are fitted on the task's training images (the mask ``rows``; cached)."""
        m = cfg.method
        if task.head == "classifier":
            source = None if spec is None else ctx.open(spec)
            logits = ctx.features(task.teacher, spec, source, tap="logits")
            if max(task.classes) >= logits.shape[1]:
                raise ConfigError(f"task classes {task.classes} exceed teacher {task.teacher}'s {logits.shape[1]} classes")
            return logits[:, task.classes].float()
        centroids = ctx.task_kmeans(torch.nonzero(rows).flatten(), task.size, seed=m.kmeans_seed, restarts=m.kmeans_restarts, name=task.teacher)
        source = None if spec is None else ctx.open(spec)
        features = ctx.features(task.teacher, spec, source, tap="pooled")
        return F.normalize(features.float(), dim=1) @ centroids.float().T / m.kmeans_temperature

    @classmethod
    def batch_layout(cls, cfg: DistillConfig, ctx) -> BatchLayout:
        return BatchLayout({"student": cfg.student.resolution}, ("task",), {"task": len(_tasks(cfg))})

    # ----- training ------------------------------------------------------------------------------
    def _common(self, adapter: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.extractor(adapter(features)), dim=1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        m = self.cfg.method
        index, task = batch["index"], batch["task"].to(torch.long)
        hidden = self.student(batch["views"]["student"])
        student = self._common(self.student_adapter, hidden)
        features = {name: self.signals[teacher_label(name)](index).float() for name in self.teacher_adapters}
        common = {name: self._common(self.teacher_adapters[name], z) for name, z in features.items()}
        teachers = [common[name] for name in self.task_teachers]
        task_logits = [self.prepared[f"logits_{t}"][index] for t in range(len(self.task_names))]
        pseudo = [self.prepared[f"pseudo_{t}"][index] for t in range(len(self.task_names))]
        own_pseudo = torch.stack(pseudo, dim=1).gather(1, task.view(-1, 1)).flatten()
        head_logits = [head(hidden) for head in self.heads]
        terms = {
            "task": task_distillation(head_logits, task_logits, task, m.kd_temperature, m.task_targets_on),
            "intra": intra_contrast(student, task, own_pseudo, m.temperature),
            "inter": inter_contrast(student, teachers, task, pseudo, m.temperature),
            "align": alignment(student, teachers, task, m.align, m.temperature),
        }
        if m.weight("rec") > 0:
            terms["rec"] = reconstruction([self.decoders[name](common[name]) for name in features], list(features.values()))
        loss = sum(m.weight(name) * value for name, value in terms.items())
        # a task absent from this batch leaves its head (and maybe its teacher's adapter) out of every term; DDP needs
        # every parameter in the graph on every process, so they enter with weight 0
        loss = loss + 0.0 * (sum(z.sum() for z in head_logits) + sum(a.sum() for a in common.values()))
        guards = {f"collapse_{name}": mean_pairwise_cosine(a.detach()) for name, a in common.items()}
        return self.log_loss(loss, **terms, **guards)

    # ----- evaluation ------------------------------------------------------------------------------
    def extra_evaluation(self, ctx, initial: dict[str, nn.Module] | None = None) -> dict[str, Any]:
        """``tasks``: per task, on its evaluation split, clustering accuracy (Hungarian), NMI and ARI of the student's
        task head, of the task's teacher head, and of k-means (C_t clusters) on the trained and on the random-init
        student's features; and, when the training images are labelled, the student's k-NN within the task and the
        pseudo-labels' purity (Hungarian accuracy of the teacher head on the task's training images; labels used for
        scoring only)."""
        cfg, results = self.cfg, {}
        student = self.student.cpu().eval()
        view = original_view(cfg.student.resolution)
        args = (cfg.data.eval_batch_size, cfg.data.num_workers, ctx.device)
        tasks = _tasks(cfg)
        splits = {name: ctx.open(task.val) for name, task in tasks.items() if task.val is not None}
        for name, source in splits.items():
            if source.labels is None:
                raise ConfigError(f"method.tasks.{name}.val ({tasks[name].val}) has no class folders, so the task cannot be scored")
        random_init = (initial or {}).get("student")
        untrained = task_clustering(random_init, view, splits, *args, seed=cfg.trainer.seed) if random_init is not None else {}
        for t, (name, task) in enumerate(tasks.items()):
            rows = self.prepared["task"].cpu() == t
            row: dict[str, Any] = {"teacher": task.teacher, "head": task.head, "classes": task.size}
            if ctx.source.labels is not None:
                truth = torch.tensor(ctx.source.labels)[rows]
                pseudo = self.prepared[f"pseudo_{t}"].cpu()[rows]
                row["pseudo_label_purity"] = hungarian_accuracy((truth - truth.min()).numpy(), pseudo.numpy())
            if name in splits:
                labels = torch.tensor(splits[name].labels)
                hidden = extract_features(student, splits[name], view, *args, f"student {name}")
                with torch.no_grad():
                    row["student_head"] = cluster_metrics(labels.numpy(), self.heads[t].cpu()(hidden).argmax(1).numpy())
                row["student_kmeans"] = kmeans_clustering(hidden, labels, seed=cfg.trainer.seed)
                if (knn := self._task_knn(ctx, name, rows, splits[name], hidden, view, args)) is not None:
                    row["student_knn"] = knn
                if name in untrained:
                    row["random_init_kmeans"] = untrained[name]
                teacher = self.teacher_task_logits(cfg, ctx, task, rows, spec=task.val).argmax(1)
                row["teacher_head"] = cluster_metrics(labels.numpy(), teacher.numpy())
            results[name] = row
        return {"tasks": results}

    def _task_knn(self, ctx, task: str, rows: torch.Tensor, split, hidden: torch.Tensor, view, args) -> dict[str, Any] | None:
        """Weighted k-NN of the student within one task (docs/methods/cka.md): the task's labelled training images as memory,
        its evaluation split as queries, classes matched by name (``eval.classes``). It comes after training, so a class
        of the split that the task's training images lack is left out and named in the row (``classes_left_out``) rather
        than refused; None when the training images are unlabelled or hold one class (a k-NN among one class scores
        nothing)."""
        source = ctx.source
        if source.labels is None:
            return None
        positions = torch.nonzero(rows).flatten().tolist()
        names = [source.classes[source.labels[i]].split("/", 1)[-1] for i in positions]  # the union prefixes the task
        own = sorted(set(names))
        if len(own) < 2:
            return None
        memory_images = RelabelledImages(source, positions, [own.index(n) for n in names], own)
        try:
            aligned = align_classes(
                memory_images, split, True, f"task {task}'s training images", f"method.tasks.{task}.val", k=self.cfg.eval.knn_k, check_images=False
            )
        except DataError:  # no class in common: nothing to score, said by the row's absence
            return None
        memory = extract_features(self.student, memory_images, view, *args, "student task memory")
        queries = aligned.rows(hidden)
        knn = knn_accuracy(
            memory, torch.tensor(memory_images.labels), queries, torch.tensor(aligned.query.labels), self.cfg.eval.knn_k, self.cfg.eval.knn_t
        )
        left_out = aligned.record.get("classes_left_out")
        return {"top1": knn["top1"], **({"classes_left_out": left_out} if left_out else {})}
