import os

import pytest
import torch

from nmt import distributed
from nmt.errors import ConfigError

SLURM = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
         "SLURM_NTASKS_PER_NODE": "2(x2)"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", *SLURM):
        # setenv first, so that teardown restores the variable even when the code under test
        # sets it through os.environ directly (delenv of an absent name records nothing)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return monkeypatch


def test_srun_tasks_become_workers(clean_env):
    for name, value in {**SLURM, "MASTER_ADDR": "node1"}.items():
        clean_env.setenv(name, value)
    assert distributed.adopt_slurm_tasks()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"],
            os.environ["LOCAL_WORLD_SIZE"], os.environ["MASTER_PORT"]) == ("3", "4", "1", "2",
                                                                          "29500")
    assert distributed.externally_launched()


def test_srun_needs_the_master_address(clean_env):
    for name, value in SLURM.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        distributed.adopt_slurm_tasks()


def test_torchrun_variables_win_over_slurm(clean_env):
    for name, value in {**SLURM, "RANK": "0", "WORLD_SIZE": "1"}.items():
        clean_env.setenv(name, value)
    assert not distributed.adopt_slurm_tasks()
    assert os.environ["WORLD_SIZE"] == "1"


def test_a_single_process_needs_no_process_group(clean_env):
    world = distributed.setup("cpu")
    assert (world.rank, world.size, world.is_main, world.distributed) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()
    values = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_sum(values, world).tolist() == [1.0, 2.0]
    assert distributed.gather_objects("x", world) == ["x"]


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        distributed.device_kind("cuda")
    assert distributed.device_kind("auto") == "cpu"
