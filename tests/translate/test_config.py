"""`TranslateConfig` validation."""


import pytest

from nmt.errors import ConfigError

from .helpers import config_for


def test_config_rejects_nonsense(ckpt):
    for bad in (dict(output_format="xml"), dict(precision="fp8"), dict(batch_tokens=0),
                dict(max_len_a=0.0, max_len_b=0), dict(max_len_a=float("inf")),
                dict(max_len_a=float("nan"))):
        with pytest.raises(ConfigError):
            config_for(ckpt, **bad)
