"""The console: about 20 plain lines a run."""

import pytest

from tests.conftest import run_script

# 64 iterations of 16 steps: enough to see the log printing only every few iterations
FLAGS = {
    "ppo_discrete.py": [],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1", "--num-minibatches", "2", "--update-epochs", "1"],
    "ppo_atari.py": ["--num-minibatches", "2", "--update-epochs", "1"],
}
BUDGET = ["--num-envs", "1", "--num-steps", "16", "--total-timesteps", "1024"]


@pytest.mark.parametrize("script", FLAGS)
def test_plain_periodic_lines_in_a_log(tmp_path, script):
    run = run_script(script, *BUDGET, *FLAGS[script], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert 20 <= len(lines) <= 22 and "\r" not in run.stdout
    assert lines[-1].startswith("step 1024/1024 (100%)")
