"""The training progress bar: short names, most important first, and the least important dropped when the terminal is
too narrow for them all, so that the loss and the label-free alignment monitor stay visible at 80 columns (tqdm cuts a
line at the terminal's width from the right, which took the monitor, logged last, first)."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar

# (name shown, metric logged, format), most important first: the loss, the label-free "is it learning?" monitor, the
# labelled monitor when it runs, then speed and the share of time spent waiting for data (engine/trainer.Throughput)
SHOWN = (
    ("loss", "train/loss_step", "{:.4g}"),
    ("cka", "monitor/teacher_cka", "{:.3f}"),
    ("knn", "monitor/knn_top1", "{:.1f}"),
    ("img/s", "img/s", "{:.0f}"),
    ("wait", "data_wait", "{:.0%}"),
)
HIDDEN = {"v_num", "train/loss_epoch"}  # the CSV logger's empty version; the epoch loss (metrics.csv has it)
MIN_BAR = 5  # columns kept for the bar: its two edges and three cells


def shown_items(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, text) of every progress-bar metric, most important first: ssdistill's own under short names, any other
    (a user callback's ``prog_bar=True``) after them under its own name."""
    items = [(name, fmt.format(float(metrics[key]))) for name, key, fmt in SHOWN if key in metrics]
    known = {key for _, key, _ in SHOWN} | HIDDEN
    for key, value in metrics.items():
        if key not in known:
            items.append((key, f"{value:.4g}" if isinstance(value, float) else str(value)))
    return items


def fitting(items: list[tuple[str, str]], line_without_postfix: Any, columns: int | None) -> dict[str, str]:
    """The most important ``items`` whose postfix fits ``columns`` beside the rest of the line and a bar of ``MIN_BAR``
    columns; ``line_without_postfix(postfix)``: the line's text without the bar for a postfix text; ``columns`` None:
    no limit (not a terminal)."""
    kept = list(items)
    while kept and columns is not None:
        postfix = ", ".join(f"{name}={text}" for name, text in kept)
        if len(line_without_postfix(postfix)) + MIN_BAR <= columns:
            break
        kept.pop()
    return dict(kept)


class RunProgressBar(TQDMProgressBar):
    """TQDMProgressBar with ssdistill's postfix (``shown_items``, cut to the terminal by ``fitting``). ``columns``: a
    fixed width (tests; None: the terminal's, as tqdm measures it)."""

    def __init__(self, refresh_rate: int = 1, columns: int | None = None) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.columns = columns

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        if self.columns is not None:
            bar.dynamic_ncols, bar.ncols = False, self.columns
        return bar

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        items = shown_items(super().get_metrics(trainer, pl_module))
        bar = self._train_progress_bar
        if bar is None or bar.disable:
            return dict(items)
        state = bar.format_dict  # measures a terminal's width now (tqdm's dynamic_ncols)

        def line_without_bar(postfix: str) -> str:
            return bar.format_meter(**{**state, "postfix": postfix, "ncols": 0})

        return fitting(items, line_without_bar, state.get("ncols"))
