import os

import pytest
import torch

from medrecon.runtime import ENV_VAR, available_cores, choose_threads, configure_threads


def test_order_of_the_rules():
    env = {ENV_VAR: "3", "OMP_NUM_THREADS": "5", "LOCAL_WORLD_SIZE": "2"}
    assert choose_threads(7, environ=env, cores=8).threads == 7  # an explicit request wins
    assert choose_threads(environ=env, cores=8).threads == 3  # then MEDRECON_THREADS
    del env[ENV_VAR]
    assert choose_threads(environ=env, cores=8).threads == 5  # then OMP_NUM_THREADS
    del env["OMP_NUM_THREADS"]
    choice = choose_threads(environ=env, cores=8, load=0.0)
    assert choice.threads == 4 and "LOCAL_WORLD_SIZE" in choice.reason  # torchrun: cores shared by 2 ranks
    assert choose_threads(environ={}, cores=8, load=0.2).threads == 8
    assert choose_threads(environ={"LOCAL_WORLD_SIZE": "4"}, cores=2, load=0.0).threads == 1  # never below 1
    assert choose_threads(environ={ENV_VAR: " "}, cores=2, load=0.0).threads == 2  # blank means unset


def test_cores_busy_with_other_jobs_are_left_to_them():
    busy = choose_threads(environ={}, cores=2, load=1.2)
    assert busy.threads == 1 and "1 busy with other jobs" in busy.reason
    assert choose_threads(environ={}, cores=8, load=3.4).threads == 5
    assert choose_threads(environ={}, cores=2, load=14.0).threads == 1  # at least one
    assert choose_threads(environ={"OMP_NUM_THREADS": "2"}, cores=2, load=14.0).threads == 2  # explicit wins


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_values_name_the_variable(bad):
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be a positive integer"):
        choose_threads(environ={ENV_VAR: bad}, cores=2)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        choose_threads(bad, environ={}, cores=2)


def test_available_cores_follows_affinity_and_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(cgroup_path=str(tmp_path / "missing")) == affinity
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")  # one core's worth of CPU time per period
    assert available_cores(cgroup_path=str(quota)) == 1
    quota.write_text("max 100000\n")
    assert available_cores(cgroup_path=str(quota)) == affinity


def test_configure_threads_applies_and_says_what_it_chose():
    before = torch.get_num_threads()
    try:
        choice = configure_threads(environ={ENV_VAR: "1"})
        assert torch.get_num_threads() == 1
        assert str(choice) == f"1 torch thread ({ENV_VAR}=1)"
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option(capsys):
    from medrecon.cli.main import main

    before = torch.get_num_threads()
    try:
        assert main(["--threads", "0", "train", "missing.yaml"]) == 2
        assert "threads must be a positive integer, got 0" in capsys.readouterr().err
        main(["--threads", "1", "train", "missing.yaml"])  # fails later (no such config), after choosing
        assert "medrecon: using 1 torch thread (requested 1)" in capsys.readouterr().out
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
