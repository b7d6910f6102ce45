"""Runs that survive: checkpoints, resume, signals, the non-finite guard, evaluation, video,
determinism and safe loading (ppo_discrete.py)."""

import glob
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ppo_discrete import CHECKPOINT_FORMAT, evaluate, load_checkpoint, save_checkpoint
from tests.conftest import REPO, TINY, Run, train_in

SCRIPT = "ppo_discrete.py"
TWICE = ["--num-envs", "2", "--num-steps", "64", "--total-timesteps", "2048"]  # 16 iterations
SCHEDULES = ["--anneal-clip", "--loss", "kl-penalty", "--kl-target", "0.001"]  # every schedule moves


def checkpoints(run: Run) -> list[str]:
    return sorted(glob.glob(f"{run.run_dir}/checkpoints/*.pt"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """16 iterations in one go, a checkpoint every 4 (the last 2 kept), and the final model."""
    return train_in(tmp_path_factory.mktemp("full"), SCRIPT, *TWICE, *SCHEDULES, "--checkpoint-every", "4",
                    "--keep-checkpoints", "2", "--save-model", "--eval-episodes", "3")  # fmt: skip


def test_checkpoints_are_kept_and_hold_the_run(full_run):
    assert [os.path.basename(path) for path in checkpoints(full_run)] == ["iteration_0000012.pt", "iteration_0000016.pt"]
    checkpoint = load_checkpoint(checkpoints(full_run)[0], "--resume")
    assert (checkpoint["iteration"], checkpoint["global_step"]) == (12, 12 * 128)
    assert checkpoint["kl_coef"] == full_run.scalars("charts/kl_coef")[12]  # the beta iteration 13 used
    assert set(checkpoint["rng"]) == {"python", "torch", "numpy"} and checkpoint["optimizer"]["state"]


def test_resume_continues_the_schedules(full_run, train):
    resumed = train(SCRIPT, *TWICE, *SCHEDULES, "--resume", checkpoints(full_run)[0])
    assert resumed.run_dir.endswith(os.path.basename(full_run.run_dir)), "a resumed run keeps its run name"
    for tag in ["charts/learning_rate", "charts/clip_coef", "charts/minibatch_steps"]:
        assert resumed.steps(tag) == full_run.steps(tag)[12:], tag  # the global step continues
        assert resumed.scalars(tag) == full_run.scalars(tag)[12:], tag
    # beta continues from the saved value (later values follow each run's own KL measurements)
    assert resumed.scalars("charts/kl_coef")[0] == full_run.scalars("charts/kl_coef")[12]


def test_resume_restores_the_state_bit_for_bit(full_run, train):
    # resuming at the run's end trains nothing, so the model it saves is the loaded state itself
    resumed = train(SCRIPT, *TWICE, *SCHEDULES, "--resume", checkpoints(full_run)[-1], "--save-model", "--eval-episodes", "3")
    before = load_checkpoint(checkpoints(full_run)[-1], "--resume")
    after = load_checkpoint(f"{resumed.run_dir}/{SCRIPT[:-3]}.pt", "--resume")
    for key in ["model", "optimizer", "rng", "kl_coef", "global_step", "iteration"]:
        assert_identical(before[key], after[key], key)
    assert resumed.scalars("eval/episodic_return") == full_run.scalars("eval/episodic_return")


def assert_identical(a, b, where):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_evaluation_reproduces_the_saved_model(full_run, tmp_path):
    (model_path,) = glob.glob(f"{full_run.run_dir}/{SCRIPT[:-3]}.pt")
    logged = full_run.scalars("eval/episodic_return")
    assert len(logged) == 3
    assert evaluate(model_path, 3, seed=1 + 10_000) == logged
    proc = subprocess.run([sys.executable, str(REPO / SCRIPT), "--eval-checkpoint", model_path, "--eval-episodes", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"{np.mean(logged):.2f} +- {np.std(logged):.2f} over 3 episodes" in proc.stdout
    assert glob.glob(str(tmp_path / "runs" / "*" / "events.out.tfevents.*"))


def start(cwd, *flags) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(REPO / SCRIPT), *flags], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def wait_for_training(proc: subprocess.Popen, cwd) -> None:
    """Until the run has set up and trained for a moment."""
    deadline = time.time() + 120
    while not glob.glob(str(cwd / "runs" / "*" / "events.out.tfevents.*")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.2)
    time.sleep(2)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, signum, code, vector_mode):
    proc = start(tmp_path, "--total-timesteps", "10000000", "--vector-mode", vector_mode)
    wait_for_training(proc, tmp_path)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))
    rel = os.path.relpath(path, tmp_path)
    assert f"--vector-mode {vector_mode} --resume {rel}" in stderr.strip().splitlines()[-1]
    assert load_checkpoint(path, "--resume")["global_step"] > 0


def test_second_sigint_stops_at_once(tmp_path):
    proc = start(tmp_path, "--total-timesteps", "10000000", "--num-steps", "100000")  # one long rollout
    wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))


def test_nan_guard_stops_without_overwriting_a_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / SCRIPT), "--env-id", "tests.envs:NanReward-v0", *TINY,
                           "--checkpoint-every", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "stopped: iteration 1: the loss is nan; stopped without saving (last good checkpoint: none)" in line
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path):
    class FailsMidWrite:
        def __reduce__(self):
            raise OSError("disk full")

    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "weights": torch.ones(1000)})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "weights": torch.zeros(1000), "later": FailsMidWrite()})
    assert torch.equal(load_checkpoint(path, "--resume")["weights"], torch.ones(1000))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def malformed(tmp_path, full_run, kind: str) -> str:
    path = str(tmp_path / f"{kind}.pt")
    if kind == "pickle-with-code":
        with open(path, "wb") as f:
            pickle.dump({"format": CHECKPOINT_FORMAT, "model": RunsCode()}, f)
    elif kind == "truncated":
        data = open(checkpoints(full_run)[0], "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "other-script":
        torch.save({"format": "ppo37 ppo_continuous.py checkpoint v1", "model": {}}, path)
    return path


@pytest.mark.parametrize("kind, flags, expected", [
    ("pickle-with-code", [], r"is not a readable checkpoint"),
    ("truncated", [], r"is not a readable checkpoint"),
    ("other-script", [], r"is not a checkpoint of ppo_discrete\.py \(ppo37 ppo_continuous\.py checkpoint v1\)"),
    ("mismatched-env", ["--env-id", "Acrobot-v1"], r"trained with --env-id CartPole-v1, this command has --env-id Acrobot-v1"),
])  # fmt: skip
def test_malformed_checkpoints_are_refused(run_fails, tmp_path, full_run, kind, flags, expected):
    path = checkpoints(full_run)[0] if kind == "mismatched-env" else malformed(tmp_path, full_run, kind)
    for flag in ["--resume", "--eval-checkpoint"] if kind != "mismatched-env" else ["--resume"]:
        line = run_fails(SCRIPT, *TWICE, *SCHEDULES, *flags, flag, path)
        assert line.startswith(f"{SCRIPT}: error: {flag}") and re.search(expected, line), line
    assert not (tmp_path / "pwned").exists(), "loading ran the pickle's code"


@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_same_seed_same_metrics(train, vector_mode):
    runs = [train(SCRIPT, *TINY, "--vector-mode", vector_mode) for _ in range(2)]
    for tag in ["losses/value_loss", "losses/policy_loss", "losses/approx_kl", "charts/episodic_return"]:
        assert runs[0].scalars(tag) == runs[1].scalars(tag), tag


def test_capture_video_writes_training_and_evaluation_videos(train):
    run = train(SCRIPT, *TINY, "--capture-video", "--save-model", "--eval-episodes", "1")
    name = os.path.basename(run.run_dir)
    assert glob.glob(str(run.cwd / "videos" / name / "*.mp4"))
    assert glob.glob(str(run.cwd / "videos" / name / "eval" / "*.mp4"))
    assert all(os.path.getsize(path) > 1000 for path in glob.glob(str(run.cwd / "videos" / "**" / "*.mp4"), recursive=True))
