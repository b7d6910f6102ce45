"""Promises a run keeps when the machine or the operator gets in its way: one process per run directory,
summary.json a scheduler can trust, a real file-size limit, a memory limit, a signal to one torchrun worker, the
printed continue line, batches that own their memory, a game its reset's no-op step ends, checkpoints crafted
elsewhere, and Ctrl-C while the script loads."""

import glob
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY, run_script, train_in
from tests.test_distributed import TIMEOUT
from tests.test_fork import DRIVERS, python, readme_driver
from tests.test_long_runs import SCRIPTS, module, start, wait_for_training


def summary(cwd: Path) -> dict:
    (path,) = glob.glob(str(cwd / "runs" / "*" / "summary.json"))
    return json.loads(Path(path).read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))


def test_a_second_process_on_a_run_in_use_is_refused_and_a_killed_one_lets_go(tmp_path):
    first = start(
        tmp_path,
        "ppo_discrete.py",
        "--total-timesteps",
        "10000000",
        "--checkpoint-every",
        "1",
        "--keep-checkpoints",
        "1000",
    )
    wait_for_training(first, tmp_path)
    assert summary(tmp_path)["ended"] == "running"
    (checkpoint, *_) = sorted(glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt")))
    second = run_script("ppo_discrete.py", "--resume", checkpoint, cwd=tmp_path)
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    run_dir = os.path.relpath(os.path.dirname(os.path.dirname(checkpoint)), tmp_path)
    assert (
        second.stderr.strip() == f"ppo_discrete.py: error: {run_dir} is in use by another process; wait for it to end"
    )
    first.send_signal(signal.SIGKILL)  # no handler runs: the kernel lets go of the lock
    first.communicate(timeout=60)
    assert summary(tmp_path)["ended"] == "running"  # what a killed run leaves: not a stale "finished"
    last = sorted(glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt")))[-1]
    step = module("ppo_discrete.py").load_checkpoint(last, "--resume")["global_step"]
    train_in(tmp_path, "ppo_discrete.py", "--resume", last, "--total-timesteps", str(step + 512))
    assert summary(tmp_path)["ended"] == "finished" and summary(tmp_path)["global_step"] == step + 512


def test_summary_totals_go_on_across_resumptions_and_hold_the_flags(tmp_path):
    run = train_in(tmp_path, "ppo_discrete.py", *TINY, "--checkpoint-every", "1", "--keep-checkpoints", "10")
    checkpoints = sorted(glob.glob(f"{run.run_dir}/checkpoints/*.pt"))
    first = summary(tmp_path)
    train_in(tmp_path, "ppo_discrete.py", "--resume", checkpoints[3])  # iterations 5-8 again, from iteration 4's
    resumed = summary(tmp_path)
    returns = run.scalars("charts/episodic_return")  # the events as the resumed run left them
    assert resumed["episodes"] == len(returns) and resumed["global_step"] == 1024
    assert resumed["mean_return_last_100"] == pytest.approx(sum(returns[-100:]) / len(returns[-100:]))
    assert resumed["wall_seconds"] > first["wall_seconds"] and resumed["args"]["num_steps"] == 64
    train_in(tmp_path, "ppo_discrete.py", "--resume", checkpoints[-1])  # nothing left to train
    again = summary(tmp_path)
    assert again["ended"] == "finished" and again["global_step"] == 1024 and again["episodes"] == resumed["episodes"]


def test_summary_of_a_run_whose_env_raises_says_error_and_why(tmp_path):
    env = {"RANK": "1"}  # CrashOnRank1-v0 raises after 100 steps in the worker of rank 1
    run = run_script("ppo_discrete.py", "--env-id", "tests.envs:CrashOnRank1-v0", *TINY, cwd=tmp_path, env=env)
    assert run.returncode == 1
    ended = summary(tmp_path)
    assert ended["ended"] == "error" and "worker 1 crashes on purpose" in ended["error"], ended


def test_summary_is_valid_json_when_a_return_is_not_finite(tmp_path):
    code = """
import ppo_discrete as m
m.evaluate = lambda *args, **kwargs: [float("-inf"), 1.0]  # as an env whose evaluation paid -inf would
m.main(m.Args(total_timesteps=1024, num_envs=2, num_steps=64, save_model=True))
"""
    proc = python(tmp_path, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary(tmp_path)["eval_mean_return"] is None  # JSON has no -Infinity


@pytest.mark.parametrize(
    "limit, flags, cannot_write",
    [
        (100_000, ["--checkpoint-every", "2"], r"runs/[^/]+/checkpoints/iteration_0000002\.pt: .+"),  # 142 kB each
        (12_000, ["--total-timesteps", "200000"], r"runs/[^/ ]+: File too large"),  # TensorBoard's events
    ],
    ids=["checkpoint", "tensorboard"],
)
def test_a_real_file_size_limit_stops_the_run_in_one_line(tmp_path, limit, flags, cannot_write):
    proc = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), *TINY, *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),  # Python ignores SIGXFSZ
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert re.fullmatch(rf"ppo_discrete\.py: stopped: cannot write {cannot_write} \(last good checkpoint: none\)", line)
    assert summary(tmp_path)["ended"] == "error"
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))


def test_the_memory_check_counts_the_network_and_a_process_limit(tmp_path):
    limit = 6 * 2**30  # torch and the emulator load in it; the first layer of a 1200 x 1200 frame's CNN does not
    proc = subprocess.run(
        [sys.executable, str(REPO / "ppo_atari.py"), "--frame-size", "1200", "--num-envs", "1", "--num-steps", "8"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"--frame-size 1200\^2: the rollout buffers need [\d.]+ GiB, more than the 6.0 GiB", proc.stderr)
    assert not (tmp_path / "runs").exists()


def test_a_signal_to_one_torchrun_worker_stops_both_with_a_checkpoint(tmp_path):
    flags = ["--total-timesteps", "10000000", "--num-envs", "2", "--num-steps", "64", "--checkpoint-every", "4"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.Popen(
        [*launch, str(REPO / "ppo_discrete.py"), *flags],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_training(proc, tmp_path)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    (rank1,) = [pid for pid in workers if "RANK=1" in Path(f"/proc/{pid}/environ").read_text().split("\0")]
    os.kill(int(rank1), signal.SIGTERM)  # the worker that prints nothing: each must stop, and both save
    _, stderr = proc.communicate(timeout=TIMEOUT)
    assert "IndexError" not in stderr and "continue with: torchrun" in stderr, stderr[-3000:]
    ended = summary(tmp_path)
    assert ended["ended"] == "signal SIGTERM" and ended["last_checkpoint"], ended
    checkpoint = module("ppo_discrete.py").load_checkpoint(str(tmp_path / ended["last_checkpoint"]), "--resume")
    assert len(checkpoint["rng"]) == 2 and checkpoint["global_step"] == ended["global_step"]


def test_the_printed_continue_line_runs_as_printed(tmp_path):
    proc = start(tmp_path, "ppo_discrete.py", "--total-timesteps", "10000000", "--exp-name", "my exp; $(touch x)")
    wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    stopped = re.search(r"stopped at step (\d+); continue with: (.+)$", stderr.strip().splitlines()[-1])
    step, command = int(stopped.group(1)), stopped.group(2)
    assert shlex.split(command)[:2] == ["python", str(REPO / "ppo_discrete.py")]
    resumed = subprocess.run(  # as a user pastes it into a shell, with a nearer end
        f"{command} --total-timesteps {step + 512}",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(tmp_path)["global_step"] == step + 512 and not (tmp_path / "x").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_batch_kept_past_the_next_rollout_stays_as_it_was(tmp_path, script):
    driver = DRIVERS[script] or readme_driver()
    if script == "ppo_atari.py":  # one frame per observation: the case where channels-last alone would not copy
        driver = driver.replace("num_steps=64)", "num_steps=64, recurrent=True, num_minibatches=2)")
    keep = f"""
import torch, {script[:-3]} as script
kept, update = [], script.update
def keeping_update(agent, optimizer, batch, *rest):
    kept.append((batch, {{key: value.clone() for key, value in batch.items() if value is not None}}))
    return update(agent, optimizer, batch, *rest)
script.update = keeping_update
"""
    check = "\nassert len(kept) > 1 and all(torch.equal(b[k], c[k]) for b, c in kept for k in c), 'a batch changed'\n"
    proc = python(tmp_path, keep + driver + check)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_run_name_that_would_leave_runs_is_refused(tmp_path, run_fails):
    assert "must be one folder name" in run_fails("ppo_discrete.py", *TINY, "--exp-name", "../../escape")
    (tmp_path / "train").mkdir()
    trained = train_in(tmp_path / "train", "ppo_discrete.py", *TINY, "--save-model", "--eval-episodes", "1")
    checkpoint = torch.load(glob.glob(f"{trained.run_dir}/*.pt")[0], weights_only=True)
    torch.save({**checkpoint, "run_name": "../../escape"}, tmp_path / "crafted.pt")
    line = run_fails("ppo_discrete.py", "--resume", str(tmp_path / "crafted.pt"))
    assert "is not a whole checkpoint of ppo_discrete.py (run_name)" in line
    assert not (tmp_path.parent / "escape").exists()


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory) -> dict:
    """A checkpoint ppo_discrete.py wrote with --save-model, loaded."""
    trained = train_in(
        tmp_path_factory.mktemp("saved"), "ppo_discrete.py", *TINY, "--save-model", "--eval-episodes", "1"
    )
    return torch.load(glob.glob(f"{trained.run_dir}/*.pt")[0], weights_only=True)


CRAFTED = {  # a checkpoint from elsewhere with one entry crafted -> what the refusal names
    "rng": (lambda c: {**c, "rng": 7}, "rng"),
    "global_step": (lambda c: {**c, "global_step": "abc"}, "global_step"),
    "iteration": (lambda c: {**c, "iteration": -5}, "iteration"),
    "returns": (lambda c: {**c, "returns": "abc"}, "returns"),
    "run_name": (lambda c: {**c, "run_name": "../../escape"}, "run_name"),
    "flag": (lambda c: {**c, "args": {**c["args"], "no_such_flag": 1}}, "flag no_such_flag"),
    "nan": (
        lambda c: {**c, "model": {k: torch.full_like(v, float("nan")) for k, v in c["model"].items()}},
        "not finite",
    ),
}


@pytest.mark.parametrize("entry", CRAFTED)
@pytest.mark.parametrize("flag", ["--resume", "--eval-checkpoint"])
def test_a_crafted_checkpoint_is_refused_in_one_line_before_anything_is_written(
    tmp_path, run_fails, saved_checkpoint, flag, entry
):
    craft, named = CRAFTED[entry]
    torch.save(craft(saved_checkpoint), tmp_path / "crafted.pt")
    line = run_fails("ppo_discrete.py", flag, str(tmp_path / "crafted.pt"), "--capture-video")
    assert f"{flag} {tmp_path / 'crafted.pt'} is not a whole checkpoint of ppo_discrete.py (" in line and named in line
    assert os.listdir(tmp_path) == ["crafted.pt"] and not (tmp_path.parent / "escape").exists()  # no videos/ either


@pytest.mark.parametrize("flag", ["--resume", "--eval-checkpoint"])
def test_a_crafted_flag_value_is_refused_in_one_line(tmp_path, run_fails, saved_checkpoint, flag):
    torch.save({**saved_checkpoint, "args": {**saved_checkpoint["args"], "num_envs": "two"}}, tmp_path / "crafted.pt")
    line = run_fails("ppo_discrete.py", flag, str(tmp_path / "crafted.pt"))
    assert "The field `num-envs` is annotated with type `<class 'int'>`, but the default value `two`" in line


def test_ctrl_c_while_the_script_loads_its_modules_ends_it_quietly(tmp_path):
    # 0.3 s in, torch is still loading (it takes seconds): Python's default would print a KeyboardInterrupt traceback
    command = [sys.executable, str(REPO / "ppo_discrete.py"), *TINY]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and stderr == "" and not (tmp_path / "runs").exists()
