"""Small per-row hooks that benchmarks/rows.yaml names: a row's ``notes`` (text for the table's notes column, from the
row's method config) and its smoke ``loss_from_epoch`` when the epoch depends on the config."""

from __future__ import annotations


def mvmr_representations(method_config: dict) -> str:
    """Which non-learnable representations (and which sign for the hand-crafted ones) produced an MV-MR row."""
    from ssdistill.methods.mvmr import MVMRConfig

    config = MVMRConfig(**method_config)
    handcrafted = config.chosen_representations()
    terms = (["teacher"] if config.mode == "kd" else []) + handcrafted
    sign = f", {config.handcrafted_sign} sign" if handcrafted else ""
    return f"representations: {', '.join(terms) or 'none'}{sign}"


def after_warm_up(method_config: dict) -> int:
    """BINGO: a queue holds real keys from epoch 1 on, and the official form adds its inter terms after
    ``warm_epochs``; earlier epochs optimise an easier loss, not the same one."""
    if method_config.get("loss_form", "official") == "official":
        return max(1, int(method_config.get("warm_epochs", 10)) + 1)
    return 1


NOTES = {"mvmr_representations": mvmr_representations}
EPOCHS = {"after_warm_up": after_warm_up}
