"""runs/<run>/summary.json: how a run ended and what it did, for CI and sweeps (signal and non-finite endings are
checked in tests/test_long_runs.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, train_in


@pytest.mark.parametrize("script", ["ppo_discrete.py", "ppo_continuous.py"])
def test_a_finished_run_summarises_what_it_logged(tmp_path, script):
    env = ["--env-id", "Pendulum-v1"] if script == "ppo_continuous.py" else []
    run = train_in(tmp_path, script, *env, *TINY, "--save-model", "--eval-episodes", "2")
    summary = json.loads((Path(run.run_dir) / "summary.json").read_text())
    returns = run.scalars("charts/episodic_return")
    assert summary["ended"] == "finished" and summary["run"] == Path(run.run_dir).name
    assert summary["global_step"] == summary["total_timesteps"] == 1024
    assert summary["episodes"] == len(returns) > 0
    assert summary["mean_return_last_100"] == pytest.approx(np.mean(returns[-100:]), rel=1e-6)
    assert summary["sps"] == run.scalars("charts/SPS")[-1]
    assert summary["eval_mean_return"] == pytest.approx(run.scalars("eval/mean_return")[0], rel=1e-6)
    assert summary["wall_seconds"] > 0 and summary["last_checkpoint"].endswith(".pt")
    assert not list(Path(run.run_dir).glob("*.tmp"))
