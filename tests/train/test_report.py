"""metrics.jsonl companions: TensorBoard events."""

import pytest

from nmt import train
from nmt.errors import ConfigError

from .support import (
    small_run,
)


def test_tensorboard_events_or_a_clear_error(tmp_path, toy_data):
    import importlib.util

    overrides = small_run(max_steps=2, save_every=2, tensorboard=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            train.main(data=toy_data, run=tmp_path / "run", preset="tiny", overrides=overrides)
    else:
        train.main(data=toy_data, run=tmp_path / "run", preset="tiny", overrides=overrides)
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_the_progress_ends_full_when_the_time_limit_ends_training(tmp_path, toy_data):
    class Capture(train.Reporter):
        def __init__(self):
            self.stats = []

        def progress(self, stats):
            self.stats.append(stats)

    capture = Capture()
    result = train.main(data=toy_data, run=tmp_path / "run", preset="tiny",
                        overrides=small_run(max_steps=100_000, save_every=1000, max_time=1.5),
                        reporter=capture)
    assert result.reason == "max time"
    done = [s["done"] for s in capture.stats]
    assert done == sorted(done) and done[-1] == 1.0 and done[0] < 0.5
