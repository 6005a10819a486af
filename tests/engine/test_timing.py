import pytest

from ssdistill.runs.record import images_per_second


def test_throughput_is_this_attempts_batches_over_its_seconds():
    assert images_per_second(10, 4.0, [100.0, 100.0], 50, 32) == pytest.approx(80.0)


def test_an_attempt_that_resumed_after_the_last_epoch_takes_the_runs_epochs():
    # it trained no batch: 3 completed epochs of 50 batches of 32 images in 60 s give 80 images/s, not 0
    assert images_per_second(0, 0.0, [20.0, 25.0, 15.0], 50, 32) == pytest.approx(80.0)
    assert images_per_second(0, 0.0, [], 50, 32) == 0.0
