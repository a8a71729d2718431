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
