"""Lightning trainer factory: devices, strategy (DDP), precision and the ``trainer.extra`` passthrough
(``engine/lightning_options.py``), checkpoints every epoch + last.ckpt, CSV logs (and the trackers of ``run.loggers``), the
progress bar (``engine/progress.py``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ssdistill.config import DistillConfig
from ssdistill.engine.lightning_options import lightning_trainer, quiet_lightning
from ssdistill.engine.progress import RunProgressBar
from ssdistill.engine.resume import newest_checkpoint
from ssdistill.engine.trackers import TrackerStart, tracker_loggers
from ssdistill.errors import ConfigError, Interrupted, short
from ssdistill.models.checkpoints import save_checkpoint_file


class TrainingClock(L.Callback):
    """Training seconds summed over every attempt of a run: the total so far travels in each checkpoint, so a resumed
    run reports the time of all its epochs (work lost between the last checkpoint and a kill is not counted). Also the
    seconds of each epoch's batches alone (``epochs``; checkpoints and monitors after them excluded, an epoch resumed
    mid-way counts its resumed part), so a quality reached at epoch e was reached after ``sum(epochs[:e])`` seconds of
    training, whatever the monitors cost."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier attempts, up to the checkpoint this attempt resumed from
        self.started: float | None = None
        self.measured: float | None = None  # this attempt's seconds, measured in a spawned process (SpawnedRunLauncher)
        self.epochs: list[float] = []
        self.epoch_started: float | None = None

    def on_train_start(self, trainer, module) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer, module) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:  # before the checkpoint and the monitors (first callback)
        if self.epoch_started is not None:
            self.epochs.append(time.perf_counter() - self.epoch_started)
            self.epoch_started = None

    def this_attempt(self) -> float:
        if self.measured is not None:
            return self.measured
        return 0.0 if self.started is None else time.perf_counter() - self.started

    def total(self) -> float:
        return self.before + self.this_attempt()

    def state_dict(self) -> dict:
        return {"seconds": self.total(), "epoch_seconds": list(self.epochs)}

    def load_state_dict(self, state: dict) -> None:
        self.before = float(state["seconds"])
        self.epochs = [float(s) for s in state.get("epoch_seconds", [])]


class LogStep(L.Callback):
    """The step a resumed run logs under (metrics.csv's ``step``, the trackers' x axis). Lightning keeps a count of the
    batches that stepped the optimiser for its loggers and, on a resume, re-derives it from the checkpoint's progress
    counters; a checkpoint taken at some moments of a batch's end comes back one behind, and the resumed run then logs
    two batches under one step. With ssdistill's one automatic optimiser that count is ``global_step`` at the start of
    every batch, so the first batch of each attempt sets it so."""

    def __init__(self) -> None:
        self.first = True

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if not self.first:
            return
        self.first = False
        loop = trainer.fit_loop.epoch_loop
        if module.automatic_optimization and len(trainer.optimizers) == 1 and loop._batches_that_stepped != trainer.global_step:
            loop._batches_that_stepped = trainer.global_step


class Throughput(L.Callback):
    """Images per second and the share of wall time spent waiting for the next batch, over the last ``window``
    batches, on the progress bar (not in the logs: timings would make two identical runs' metrics differ). The wait
    is the time from the end of one batch to the start of the next, when the loader hands it over."""

    def __init__(self, images_per_batch: int, window: int = 20) -> None:  # images of one process's batch
        self.images, self.window = images_per_batch, window
        self.waits: list[float] = []
        self.computes: list[float] = []
        self.started = self.ended = None

    def on_train_epoch_start(self, trainer, module) -> None:
        self.ended = None  # the gap between epochs (checkpoints, monitors) is not waiting for data

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.started = time.perf_counter()
        if self.ended is not None:
            self.waits = [*self.waits, self.started - self.ended][-self.window :]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.ended = time.perf_counter()
        self.computes = [*self.computes, self.ended - self.started][-self.window :]
        wait, compute = sum(self.waits), sum(self.computes)
        if self.waits:
            seconds = wait * len(self.computes) / len(self.waits) + compute
            module.log(
                "img/s", self.images * trainer.world_size * len(self.computes) / seconds, prog_bar=True, logger=False, on_step=True, on_epoch=False
            )
            module.log(
                "data_wait", wait / (wait + compute * len(self.waits) / len(self.computes)), prog_bar=True, logger=False, on_step=True, on_epoch=False
            )


class SpawnedRunLauncher(_MultiProcessingLauncher):
    """Lightning's launcher of spawned / forked processes (trainer.strategy=ddp_spawn, ddp_fork, ddp_notebook), which
    also brings back to the launching process what the run reads after training besides the weights (which Lightning
    brings back itself): the loops' progress (global step, epoch), the training clock and the batches trained."""

    def launch(self, function, *args, trainer: L.Trainer | None = None, **kwargs):
        """Lightning's launch; with ``spawn`` what each process receives (the trainer, the module, the loader and the
        callbacks, whose views and datasets hold closures) is pickled by cloudpickle, which carries closures, as
        bytes that Lightning's own wrapper unpickles in the new process."""
        if self._start_method != "spawn":
            return super().launch(function, *args, trainer=trainer, **kwargs)
        import cloudpickle
        import torch.multiprocessing as mp
        from lightning.pytorch.strategies.launchers.multiprocessing import _check_missing_main_guard, _GlobalStateSnapshot
        from lightning.pytorch.trainer.states import TrainerFn

        _check_missing_main_guard()  # Lightning's clear message for a script without `if __name__ == "__main__":`

        if self._already_fit and trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            raise NotImplementedError("a spawn-based strategy cannot fit twice with one trainer")
        os.environ["MASTER_PORT"] = str(self._strategy.cluster_environment.main_port)
        return_queue = mp.get_context("spawn").SimpleQueue()
        payload = cloudpickle.dumps((self, trainer, function, args, kwargs, _GlobalStateSnapshot.capture()))
        context = mp.start_processes(_spawned, args=(payload, return_queue), nprocs=self._strategy.num_processes, start_method="spawn", join=False)
        self.procs = context.processes
        while not context.join():
            pass
        output = return_queue.get()
        if trainer is None:
            return output
        self._already_fit |= trainer.state.fn == TrainerFn.FITTING
        self._recover_results_in_main_process(output, trainer)
        return output.trainer_results

    def get_extra_results(self, trainer: L.Trainer) -> dict:
        extra = super().get_extra_results(trainer)
        clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
        extra["ssdistill"] = {
            "fit_loop": trainer.fit_loop.state_dict(),
            "clock": {"before": clock.before, "this_attempt": clock.this_attempt(), "epochs": list(clock.epochs)},
            "batches_trained": getattr(trainer.lightning_module, "batches_trained", 0),
        }
        return extra

    def update_main_process_results(self, trainer: L.Trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        state = extra["ssdistill"]
        trainer.fit_loop.load_state_dict(state["fit_loop"])
        clock = next(c for c in trainer.callbacks if isinstance(c, TrainingClock))
        clock.before, clock.measured, clock.epochs = state["clock"]["before"], state["clock"]["this_attempt"], state["clock"]["epochs"]
        trainer.lightning_module.batches_trained = state["batches_trained"]


def _spawned(process_idx: int, payload: bytes, return_queue) -> None:
    """A spawned process of SpawnedRunLauncher: unpickle what the launching process sent, then Lightning's own start."""
    import cloudpickle

    quiet_lightning()  # a new interpreter: the launching process's logger levels and warning filters are not inherited
    launcher, trainer, function, args, kwargs, global_states = cloudpickle.loads(payload)
    launcher._wrapping_function(process_idx, trainer, function, args, kwargs, return_queue, global_states)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their path and renamed into place: a kill during the write leaves
    the previous file whole, nothing is staged in the system temp folder, and a full disk is one line
    (``models.checkpoints.save_checkpoint_file``)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        save_checkpoint_file(checkpoint, Path(path))


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that follows its run directory when it moves: the paths a checkpoint remembers (last, best, the
    kept per-epoch files) are re-rooted at the current folder on resume. ``last.ckpt`` is always overwritten in place,
    whichever checkpoint callback writes it (per epoch, every N steps, on SIGTERM): Lightning's version counter would
    otherwise write ``last-v1.ckpt`` beside a ``last.ckpt`` the other callback wrote, and the final state of a finished
    run would not be in ``last.ckpt``.

    ``on_sigterm``: when the process received SIGTERM (a scheduler's preemption), save ``last.ckpt`` at the end of the
    batch being trained, where the every-N-steps checkpoints are saved (a mid-epoch checkpoint resumes exactly); then
    Lightning stops training. One process only: under DDP the other processes learn of the signal a batch later, and the
    save is collective, so there the last per-epoch / per-N-steps checkpoint is what a resume finds."""

    def __init__(self, *args, on_sigterm: bool = False, **kwargs) -> None:
        super().__init__(*args, enable_version_counter=False, **kwargs)
        self.on_sigterm = on_sigterm

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        if not self.on_sigterm or trainer.world_size != 1:
            return
        watch = next((c for c in trainer.callbacks if isinstance(c, StopWatch)), None)
        pending = watch is not None and watch.pending
        if trainer.received_sigterm or pending:
            if self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            if pending:  # saved: now Lightning may stop, at the end of this batch (sigterm_noted held it back)
                watch.pending = False
                trainer._signal_connector.received_sigterm = True

    def load_state_dict(self, state_dict: dict) -> None:
        old, new = state_dict.get("dirpath"), self.dirpath
        if old and new and old != new:
            move = lambda path: new + path[len(old) :] if isinstance(path, str) and path.startswith(old) else path  # noqa: E731
            state_dict = {key: move(value) for key, value in state_dict.items()}
            state_dict["best_k_models"] = {move(path): score for path, score in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict(state_dict)


def build_trainer(cfg: DistillConfig, run_dir: Path, callbacks: list | tuple = (), distributed_sampler: bool = True) -> L.Trainer:
    quiet_lightning()
    t = cfg.trainer
    checkpoints = run_dir / "checkpoints"
    every_epoch = RunCheckpoint(
        dirpath=checkpoints,
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_top_k=t.keep_checkpoints,
        monitor="epoch",
        mode="max",
        save_last=True,
        on_sigterm=True,
    )
    all_callbacks = [TrainingClock(), LogStep(), every_epoch, *callbacks, StopWatch()]
    if t.checkpoint_every_n_steps:
        all_callbacks.append(RunCheckpoint(dirpath=checkpoints, every_n_train_steps=t.checkpoint_every_n_steps, save_top_k=0, save_last=True))
    if t.progress_bar:
        all_callbacks += [RunProgressBar(refresh_rate=1), Throughput(cfg.data.batch_size)]
    loggers = [CSVLogger(save_dir=str(run_dir), name="", version=""), *tracker_loggers(cfg, run_dir)]
    all_callbacks.append(TrackerStart(cfg, run_dir))
    if isinstance(t.devices, int) and t.devices < 1:
        raise ConfigError(f"trainer.devices must be at least 1 (or auto), got {t.devices}")
    trainer = lightning_trainer(  # accelerator, devices, nodes, strategy, precision and trainer.extra from the config
        cfg,
        accumulate_grad_batches=t.accumulate_grad_batches,
        max_epochs=t.epochs,
        callbacks=all_callbacks,
        logger=loggers,
        enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=cfg.optim.grad_clip,
        limit_train_batches=t.limit_train_batches,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=distributed_sampler,
        plugins=[AtomicCheckpointIO()],
    )
    launcher = getattr(trainer.strategy, "_launcher", None)
    if type(launcher) is _MultiProcessingLauncher:  # ddp_spawn, ddp_fork: the run's state comes back with the weights
        trainer.strategy._launcher = SpawnedRunLauncher(trainer.strategy, start_method=launcher._start_method)
    return trainer


class StopWatch(L.Callback):
    """Remembers why training stopped early: Lightning turns Ctrl-C into ``sys.exit(1)`` and SIGTERM into an exit with
    code 0, and only its callbacks see the cause."""

    def __init__(self) -> None:
        self.cause: BaseException | None = None
        self.started = False  # training started: a resumed run's checkpoint was restored
        self.terminated = False  # SIGTERM came while fit set up, before Lightning's own handler was in place
        self.pending = False  # SIGTERM came while training: Lightning's stop held back until last.ckpt is saved

    def on_train_start(self, trainer, module) -> None:
        self.started = True
        if self.terminated and not trainer.received_sigterm:
            raise SIGTERMException()

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        self.cause = exception


class WorkerStart:
    """A data-loading worker's start: SIGTERM ignored (a SIGTERM sent to the whole process group, as systemd or a job
    scheduler may, would otherwise kill the workers mid-batch and turn the trainer's clean stop into a traceback; the
    trainer shuts its workers down when it stops), then the loader's own start (Lightning's worker seeding)."""

    def __init__(self, inner=None) -> None:
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.inner is not None:
            self.inner(worker_id)


def fit(trainer: L.Trainer, module: L.LightningModule, loader, checkpoint: Path | None, run_dir: Path) -> None:
    """``trainer.fit``, with Ctrl-C and SIGTERM ending in :class:`Interrupted` (exit 130 / 143 with a resume hint) instead
    of Lightning's bare exits. SIGTERM is left to Lightning while it trains (it finishes the batch, saves ``last.ckpt``
    and stops, see :class:`RunCheckpoint`; one that comes while fit sets up stops it before the first batch; one that
    comes after the last batch, while Lightning tears down, stops the run once fit returns, before the evaluation); a
    checkpoint that does not fit the module (a forced change: a state dict or optimiser parameter groups of other
    shapes) is one line, any other error while it is restored is raised as it is. SIGINT's and SIGTERM's handlers are
    put back afterwards (Lightning leaves SIGINT ignored after a Ctrl-C)."""
    main = threading.current_thread() is threading.main_thread()
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) if main else None
    watch = next(c for c in trainer.callbacks if isinstance(c, StopWatch))
    if getattr(loader, "num_workers", 0) > 0 and not isinstance(loader.worker_init_fn, WorkerStart):
        inner = loader.worker_init_fn
        if inner is None and int(os.environ.get("PL_SEED_WORKERS", 0)):
            inner = pl_worker_init_function  # what Lightning would add (the process's global rank)
        loader.worker_init_fn = WorkerStart(inner)
    if main:  # noted only: Lightning chains this handler to its own, and nothing may raise mid-batch
        signal.signal(signal.SIGTERM, partial(sigterm_noted, trainer, watch))
    try:
        trainer.fit(module, loader, ckpt_path=str(checkpoint) if checkpoint else None)
    except (SystemExit, KeyboardInterrupt) as exc:
        cause = exc if isinstance(exc, SIGTERMException) else watch.cause
        if isinstance(cause, (KeyboardInterrupt, SIGTERMException)):
            what = "SIGTERM" if isinstance(cause, SIGTERMException) else "Ctrl-C"
            raise interruption(run_dir, what, f"at step {trainer.global_step}") from None
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        if checkpoint is None or watch.started or not any(sign in str(exc) for sign in LOAD_MISMATCHES):
            raise  # an out-of-memory, a process group that cannot start, a bug: not the user's config
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]  # the first mismatch
        raise ConfigError(
            f"checkpoint {checkpoint} does not fit the resumed config ({short(detail, 200)}): a forced change alters what the "
            f"checkpoint holds; resume without it or start a new run"
        ) from None
    finally:
        if handlers is not None:
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
    if watch.terminated:  # noted by the flag-only handler Lightning chains to its own and puts back when it tears down
        raise interruption(run_dir, "SIGTERM", "after training")


def sigterm_noted(trainer, watch: StopWatch, signum, frame) -> None:
    """SIGTERM noted; Lightning calls this after its own handler, which set ``received_sigterm``. In one process while
    training, that flag is held back until RunCheckpoint has saved ``last.ckpt`` at the end of a batch: Lightning checks
    it again after the checkpoint callbacks, so a signal that came between the two would stop training a batch past
    the newest checkpoint (the resume then repeats that batch's step from the older one)."""
    watch.terminated = True
    if watch.started and trainer.world_size == 1:
        watch.pending = True
        trainer._signal_connector.received_sigterm = False


# what torch says when a checkpoint's tensors or optimiser state do not fit the module built from the resumed config
LOAD_MISMATCHES = ("Error(s) in loading state_dict", "size mismatch", "parameter group")


def interruption(run_dir: Path, what: str, where: str) -> Interrupted:
    """The one line an interrupted run ends with: where it stopped (``where``: "at step 7", "while it was evaluated") and
    the checkpoint a resume continues from. ``what``: Ctrl-C or SIGTERM."""
    code = 143 if what == "SIGTERM" else 130
    found = newest_checkpoint(run_dir, quiet=True)
    if found is None:
        return Interrupted(f"{what} {where}, before the first checkpoint of {run_dir}: nothing to resume; start the run again", code, run_dir)
    return Interrupted(
        f"{what} {where}; {run_dir} resumes from its checkpoint of step {found[1]}: ssdistill distill --resume {run_dir}",
        code,
        run_dir,
        found[1],
    )


def refuse_single_image_batches(batch_size: int, modules) -> None:
    """A training batch of one image cannot train BatchNorm (its statistics need two values per channel): refused in one
    line before training rather than a traceback at the first batch. The samplers drop a last partial batch, so every
    batch has ``data.batch_size`` images."""
    if batch_size > 1:
        return
    for module in modules:
        found = next((m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training), None)
        if found is not None:
            raise ConfigError(
                f"data.batch_size=1 cannot train this run: it has BatchNorm layers ({type(found).__name__}), whose statistics "
                "need at least 2 images per batch; set data.batch_size to 2 or more"
            )
