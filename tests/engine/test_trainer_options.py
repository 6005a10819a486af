"""Lightning's knobs: trainer.precision takes exactly what Lightning takes, trainer.strategy and trainer.extra reach the
trainer and the run record, and what Lightning would refuse (or fail on with a traceback) is one line through the CLI
before a run directory exists; the progress bar keeps the loss and the alignment monitor at 80 columns."""

import io
import json
import os
import typing

import lightning as L
import pytest
import torch
import yaml
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from ssdistill import distill
from ssdistill.cli import main
from ssdistill.config import TrainerConfig
from ssdistill.engine.lightning_options import lightning_strategy
from ssdistill.engine.progress import RunProgressBar, fitting, shown_items
from ssdistill.recipe import build_config

from integration.common import tiny_config


def _flat(annotation) -> set:
    """The values of a Literal, or of a Union of Literals, flattened."""
    found = set()
    for arg in typing.get_args(annotation):
        found |= _flat(arg) if typing.get_args(arg) else {arg}
    return found


def test_the_schema_accepts_exactly_lightnings_precisions_and_keeps_its_default():
    lightning = {str(value) for value in _flat(_PRECISION_INPUT)}  # its integers 16 / 32 / 64 are read as text
    ours = _flat(TrainerConfig.model_fields["precision"].annotation)
    assert ours == lightning and len(ours) == 12
    assert TrainerConfig().precision == "32" and TrainerConfig().strategy == "auto" and TrainerConfig().extra == {}
    assert TrainerConfig(precision=64).precision == "64" and TrainerConfig(precision="bf16-true").precision == "bf16-true"


def test_auto_strategy_is_ddp_for_several_processes_and_lightnings_auto_for_one():
    one = build_config(overrides=["trainer.accelerator=cpu"])
    two = build_config(overrides=["trainer.accelerator=cpu", "trainer.devices=2"])
    spawn = build_config(overrides=["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    assert [lightning_strategy(c) for c in (one, two, spawn)] == ["auto", "ddp", "ddp_spawn"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("options")
    config = tiny_config(tmp, trainer={"accelerator": "cpu"})
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(config))
    return tmp


CASES = [  # (override, the whole line the user sees)
    ("trainer.extra.determinstic=true", "error: trainer.extra.determinstic is not an argument of lightning.Trainer; did you mean 'deterministic'?"),
    ("trainer.extra.xyzzy=1", "error: trainer.extra.xyzzy is not an argument of lightning.Trainer; the ones it takes: limit_val_batches, "),
    (
        "trainer.extra.max_steps=10",
        "error: trainer.extra.max_steps cannot be used: it stops training before trainer.epochs while the "
        "record and the schedule say trainer.epochs; set trainer.epochs (and trainer.limit_train_batches) instead",
    ),
    ("trainer.extra.max_epochs=5", "error: trainer.extra.max_epochs is set by ssdistill from trainer.epochs; set trainer.epochs instead"),
    ("trainer.extra.logger=false", "error: trainer.extra.logger is set by ssdistill from run.loggers; set run.loggers instead"),
    ("trainer.extra.plugins=[]", "error: trainer.extra.plugins is set by ssdistill itself and cannot be passed; remove it from trainer.extra"),
    ("trainer.extra.barebones=true", "error: trainer.extra.barebones cannot be used: it switches off the checkpoints and logs every run writes"),
    ("trainer.strategy=dpp_spawn", "error: trainer.strategy=dpp_spawn is not a Lightning strategy; did you mean 'ddp_spawn'? valid: auto, ddp, "),
    (
        "trainer.precision=transformer-engine",
        "error: trainer.precision=transformer-engine needs a CUDA GPU and NVIDIA's Transformer Engine (pip install "
        "'transformer-engine[pytorch]'); use trainer.precision=bf16-mixed or bf16-true instead",
    ),
    (
        "trainer.strategy=fsdp",
        "error: Lightning refuses trainer.accelerator=cpu, trainer.devices=1, trainer.strategy=fsdp, "
        "trainer.precision=32: The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`. Please set "
        "`accelerator='cuda'`, `accelerator='gpu'`, or pass a `CUDAAccelerator()` instance to use FSDP.",
    ),
    (
        "trainer.extra.gradient_clip_algorithm=clip",
        "error: Lightning refuses trainer.accelerator=cpu, trainer.devices=1, trainer.strategy=auto, trainer.precision=32, "
        "trainer.extra.gradient_clip_algorithm=clip: `gradient_clip_algorithm` clip is invalid. Allowed algorithms: ['value', 'norm'].",
    ),
]


@pytest.mark.parametrize("override, line", CASES, ids=[override for override, _ in CASES])
def test_a_trainer_setting_lightning_would_refuse_is_one_line_before_the_run_starts(recipe, capsys, override, line):
    with pytest.raises(SystemExit) as exit_code:
        main(["distill", "--config", str(recipe / "recipe.yaml"), override])
    assert exit_code.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(line) if line.endswith(" ") else err[0] == line, err[0]
    assert not (recipe / "runs").exists()  # nothing was written


def test_trainer_extra_and_strategy_reach_lightning_and_the_run_record(tmp_path):
    seen = {}

    class Look(L.Callback):
        def on_train_start(self, trainer, module):
            seen.update(
                deterministic=torch.are_deterministic_algorithms_enabled(),
                clip=trainer.gradient_clip_algorithm.value,
                interval=trainer.val_check_interval,
            )

    config = tiny_config(
        tmp_path,
        trainer={
            "epochs": 1,
            "accelerator": "cpu",
            "strategy": "auto",
            "extra": {"deterministic": True, "gradient_clip_algorithm": "value", "val_check_interval": 0.5},
        },
        optim={"grad_clip": 1.0},
    )
    try:
        results = distill(config, callbacks=[Look()], quiet=True)
    finally:  # Lightning sets deterministic algorithms for the whole process
        torch.use_deterministic_algorithms(False)
    assert seen == {"deterministic": True, "clip": "value", "interval": 0.5}
    training = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["training"]
    assert training == results["training"]
    assert training["precision"] == "32" and training["precision_used"] == "32-true"  # what Lightning made of the alias
    assert training["strategy"] == "auto" and training["strategy_used"] == "SingleDeviceStrategy" and training["processes"] == 1
    assert training["extra"] == {"deterministic": True, "gradient_clip_algorithm": "value", "val_check_interval": 0.5}
    assert yaml.safe_load((tmp_path / "runs" / "tiny" / "config.yaml").read_text())["trainer"]["extra"] == training["extra"]


# ----- the progress bar at 80 columns ----------------------------------------------------------------------------------
LOGGED = {"v_num": "", "train/loss_step": 2.345678, "img/s": 1234.56, "data_wait": 0.0312, "train/loss_epoch": 2.4, "monitor/teacher_cka": 0.456789}


def _bar(columns: int) -> Tqdm:
    """A training bar as Lightning draws it, mid-epoch 12, in a terminal of ``columns`` (tqdm draws columns - 1)."""
    bar = Tqdm(total=1000, desc="Epoch 12", file=io.StringIO(), ncols=columns - 1, dynamic_ncols=False, bar_format=TQDMProgressBar.BAR_FORMAT)
    bar.n, bar.start_t, bar.last_print_t = 370, bar._time() - 80.0, bar._time()  # 370 batches in 80 s
    return bar


def test_at_80_columns_the_bar_keeps_the_loss_and_the_alignment_monitor():
    bar = _bar(80)
    bar.set_postfix(LOGGED)  # Lightning's own bar: the monitor, logged last, is what the terminal's edge cuts
    assert "monitor/teacher_cka" not in str(bar) and "0.457" not in str(bar)
    state = bar.format_dict
    bar.set_postfix(fitting(shown_items(LOGGED), lambda postfix: bar.format_meter(**{**state, "postfix": postfix, "ncols": 0}), state["ncols"]))
    line = str(bar)
    assert "loss=2.346" in line and "cka=0.457" in line and len(line) <= 79, line
    assert line.endswith("]") and "|" in line  # whole: nothing cut, and the bar itself is still drawn
    wide = _bar(160)
    wide.set_postfix(fitting(shown_items(LOGGED), lambda postfix: wide.format_meter(**{**wide.format_dict, "postfix": postfix, "ncols": 0}), 159))
    assert str(wide).endswith("loss=2.346, cka=0.457, img/s=1235, wait=3%]")  # room for all, most important first


def test_the_bar_of_a_run_in_an_80_column_terminal_shows_the_alignment_monitor(tmp_path, capsys, monkeypatch):
    import tqdm.std

    monkeypatch.setattr(tqdm.std, "_screen_shape_wrapper", lambda: lambda fp: (79, 24))  # an 80-column terminal
    config = tiny_config(tmp_path, trainer={"epochs": 2, "progress_bar": True}, eval={"align_images": 16})
    distill(config, quiet=True)
    frames = [f for f in capsys.readouterr().out.replace("\n", "\r").split("\r") if f.startswith("Epoch 1:")]
    assert frames and all(len(f) <= 79 for f in frames)
    assert all("loss=" in f and "cka=" in f for f in frames), frames[-1]  # epoch 0's monitor shows all through epoch 1
    assert isinstance(RunProgressBar(), TQDMProgressBar)


def test_checking_trainer_settings_leaves_the_process_torch_settings_as_they_were(tmp_path):
    """The pre-training check builds a throwaway Lightning trainer; with trainer.extra.deterministic/benchmark that
    would switch deterministic algorithms and cuDNN's flags on for the whole process even when the run is then refused."""
    from ssdistill.engine.lightning_options import check_trainer_options
    from ssdistill.recipe import build_config

    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    check_trainer_options(build_config(tiny_config(tmp_path, trainer={"accelerator": "cpu", "extra": {"deterministic": True, "benchmark": True}})))
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark, os.environ.get("CUBLAS_WORKSPACE_CONFIG")) == before
