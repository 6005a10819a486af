"""model_throughput: images per second of the bare forward pass, timed over at most ``repeats`` passes and no more
once ``enough_seconds`` are timed."""

import time

import torch

from ssdistill.eval.features import model_throughput


class Slow(torch.nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls = seconds, 0
        self.layer = torch.nn.Linear(1, 1)

    def forward(self, x):
        self.calls += 1
        time.sleep(self.seconds)
        return x.flatten(1)[:, :4]


def test_a_slow_model_is_timed_once_after_its_warm_up_and_a_fast_one_over_every_repeat():
    slow = Slow(0.3)
    rate = model_throughput(slow, 8, batch_size=6, repeats=3, enough_seconds=0.2)
    assert slow.calls == 2  # warm-up + one timed pass: it already took longer than enough_seconds
    assert 6 / 0.6 < rate <= 6 / 0.3 + 1e-6
    fast = Slow(0.0)
    model_throughput(fast, 8, batch_size=6, repeats=3, enough_seconds=10.0)
    assert fast.calls == 4 and fast.training  # its mode given back
