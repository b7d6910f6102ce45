"""--eval-every: the model evaluated during training on envs of its own, logged at its global step, the best one
kept as runs/<run>/best.pt (its evaluation in best.eval.json); training is untouched and a resumed run keeps a
better best model."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import train_in
from tests.test_long_runs import SCRIPTS, TWICE, module, script  # noqa: F401 (script: the fixture)

EVERY = ["--eval-every", "4", "--eval-episodes", "2"]  # 16 iterations: evaluations after iterations 4, 8, 12, 16


def test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept(tmp_path, script):
    (tmp_path / "evaluated").mkdir(), (tmp_path / "plain").mkdir()
    run = train_in(tmp_path / "evaluated", script, *SCRIPTS[script], *TWICE, *EVERY)
    after_iteration = run.steps("charts/SPS")  # the global step after each iteration
    assert run.steps("eval/mean_return") == after_iteration[3::4]
    means = run.scalars("eval/mean_return")
    best = json.loads(Path(run.run_dir, "best.eval.json").read_text())
    assert best["mean"] == pytest.approx(max(means), rel=1e-6)  # (TensorBoard keeps float32)
    assert best["global_step"] == after_iteration[3::4][int(np.argmax(means))]  # the first of equal bests
    assert best["checkpoint"] == f"runs/{Path(run.run_dir).name}/best.pt" and best["seed"] == 1 + 10_000
    # best.pt is the model that was evaluated: a checkpoint --eval-checkpoint takes, with the same returns again
    again = module(script).evaluate(f"{run.run_dir}/best.pt", 2, seed=1 + 10_000)
    np.testing.assert_allclose(again, best["returns"], rtol=1e-12)
    # the evaluations draw nothing from the training's random numbers: the run without them trains the same
    plain = train_in(tmp_path / "plain", script, *SCRIPTS[script], *TWICE)
    for tag in ("losses/value_loss", "losses/approx_kl", "charts/episodic_return"):
        assert run.scalars(tag) == plain.scalars(tag), tag


def test_a_resumed_run_keeps_a_better_best_model(tmp_path):
    script = "ppo_discrete.py"
    first = train_in(tmp_path, script, *TWICE, *EVERY)
    best = Path(first.run_dir, "best.eval.json")
    last = str(tmp_path / "iteration_16.pt")  # (a resumed run's checkpoints replace the run's older ones)
    shutil.copyfile(f"{first.run_dir}/checkpoints/iteration_0000016.pt", last)
    digest = hashlib.sha256(Path(first.run_dir, "best.pt").read_bytes()).hexdigest()
    result = json.loads(best.read_text())
    best.write_text(json.dumps(result | {"mean": 1e9}))  # as if an evaluation before the resume had been that good
    train_in(tmp_path, script, "--resume", last, "--total-timesteps", "4096")
    assert hashlib.sha256(Path(first.run_dir, "best.pt").read_bytes()).hexdigest() == digest
    assert json.loads(best.read_text())["mean"] == 1e9
    best.write_text(json.dumps(result | {"mean": -1e9}))  # and one that any evaluation beats
    resumed = train_in(tmp_path, script, "--resume", last, "--total-timesteps", "4096")
    after = [
        mean
        for step, mean in zip(resumed.steps("eval/mean_return"), resumed.scalars("eval/mean_return"))
        if step > 2048
    ]
    assert len(after) == 4 and json.loads(best.read_text())["mean"] == pytest.approx(max(after), rel=1e-6)
