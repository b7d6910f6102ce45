"""Data-parallel runs under torchrun: 2 CPU workers with gloo, on tiny budgets, in each script."""

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO, Run, assert_identical
from tests.envs import counting_episodes

# each script on an env of its own, 2 envs x 32 steps per worker: a global batch of 128, 4 iterations
SCRIPTS = {
    "ppo_discrete.py": ["--total-timesteps", "512"],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1", "--total-timesteps", "512"],
    "ppo_atari.py": ["--env-id", "PongNoFrameskip-v4", "--total-timesteps", "256", "--env-backend", "ale"],
}
SMALL = ["--num-envs", "2", "--num-steps", "32", "--num-minibatches", "2", "--update-epochs", "2"]
TIMEOUT = 300  # a hang fails the test instead of blocking the suite


def total_steps(script: str) -> int:
    return int(SCRIPTS[script][SCRIPTS[script].index("--total-timesteps") + 1])


def torchrun(cwd: Path, *command: str, launch: tuple = ("--standalone", "--nproc_per_node", "2")) -> Run:
    """`torchrun <launch> <command>` from `cwd`, one torch thread per worker."""
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *launch, *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, cwd)


def worker_command(cwd: Path, script: str, *flags: str) -> list[str]:
    """Run the script's main() in each worker and keep what it returns in <cwd>/rank<R>.pt."""
    return [str(REPO / "tests" / "dist_worker.py"), script[: -len(".py")], str(cwd), "--", *flags]


def train_workers(cwd: Path, script: str, *flags: str, **kwargs) -> tuple[Run, list[dict]]:
    run = torchrun(cwd, *worker_command(cwd, script, *flags), **kwargs)
    assert run.returncode == 0, run.stderr[-4000:]
    return run, [torch.load(cwd / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.fixture(params=SCRIPTS)
def script(request):
    return request.param


def test_workers_end_bit_identical(tmp_path, script, monkeypatch):
    # the schedules and the KL-penalty beta must move the same way on both workers too; every step must use the
    # mean of both workers' gradients (checked inside the workers, see tests/dist_worker.py)
    monkeypatch.setenv("PPO37_CHECK_COLLECTIVES", "1")
    run, (rank0, rank1) = train_workers(
        tmp_path,
        script,
        *SCRIPTS[script],
        *SMALL,
        "--anneal-clip",
        "--loss",
        "kl-penalty",
        "--save-model",
        "--eval-episodes",
        "1",
        "--eval-every",
        "2",
    )
    assert_identical(rank0, rank1)
    # the global step counts both workers: workers x envs x steps x iterations
    total = total_steps(script)
    iterations = total // (2 * 2 * 32)
    assert rank0["global_step"] == 2 * 2 * 32 * iterations == total
    assert run.steps("charts/SPS")[-1] == total
    assert torch.load(f"{run.run_dir}/{script[:-3]}.pt", weights_only=True)["global_step"] == total
    # only rank 0 reports and evaluates (every 2 iterations, and the saved model): one header line, one line each
    assert run.stdout.count("iterations of 64 steps x 2 workers") == 1
    assert run.stdout.count("evaluation of") == iterations // 2 + 1 and os.path.exists(f"{run.run_dir}/best.pt")
    records = [torch.load(tmp_path / f"rank{rank}_records.pt", weights_only=True) for rank in range(2)]
    assert all(r["checked_gradient_steps"] == iterations * 2 * 2 for r in records)  # 2 epochs x 2 minibatches
    if script == "ppo_continuous.py":  # the statistics are those of both workers' data
        assert_merged_statistics(rank0, records)


def assert_merged_statistics(state: dict, records: list[dict], gamma: float = 0.99) -> None:
    """The observation and reward statistics equal those of all workers' raw observations (every reset and
    step) and discounted returns (restarted where an episode ended)."""
    from ppo_continuous import RunningMeanStd

    obs_rms = RunningMeanStd(state["obs_rms"]["mean"].shape)
    obs_rms.update(torch.cat([r["obs"].reshape(-1, obs_rms.mean.shape[0]) for r in records]).double().numpy())
    return_rows = []
    for r in records:
        returns = np.zeros(r["rewards"].shape[1])
        for reward, done in zip(r["rewards"].double().numpy(), r["dones"].numpy()):
            returns = returns * gamma + reward
            return_rows.append(returns.copy())
            returns[done] = 0.0
    return_rms = RunningMeanStd()
    return_rms.update(np.concatenate(return_rows))
    for expected, saved in [(obs_rms, state["obs_rms"]), (return_rms, state["reward_rms"])]:
        np.testing.assert_allclose(saved["mean"].numpy(), expected.mean, rtol=1e-5)  # batches of float32
        np.testing.assert_allclose(saved["var"].numpy(), expected.var, rtol=1e-5)
        assert saved["count"] == pytest.approx(expected.count)


def test_both_workers_episodes_are_logged_exactly(tmp_path):
    run, _ = train_workers(
        tmp_path, "ppo_discrete.py", "--env-id", "tests.envs:CountingEnv-v0", "--total-timesteps", "512", *SMALL
    )
    logged = Counter(zip(run.steps("charts/episodic_return"), run.scalars("charts/episodic_return")))
    # worker r's envs are seeded 1 + 2r, 2 + 2r; a vector step of one worker is 2 envs x 2 workers global steps
    expected = Counter(
        (vector_step * 4, episode_return)
        for rank in range(2)
        for vector_step, _, episode_return, _ in counting_episodes(1 + 2 * rank, 2, 128)
    )
    assert logged == expected


def test_only_rank_0_records_video(tmp_path):
    # as in CleanRL's multi-GPU scripts, the first env of rank 0: recorders in two workers would write the same files
    flags = ["--env-id", "tests.envs:SlowFrames-v0", "--env-kwargs", "seconds=0", "--capture-video", *SMALL]
    run = torchrun(tmp_path, str(REPO / "ppo_discrete.py"), *flags, "--total-timesteps", "512")
    assert run.returncode == 0, run.stderr[-4000:]
    assert sorted(path.name for path in tmp_path.glob("rendered-by-rank-*")) == ["rendered-by-rank-0"]
    assert list(tmp_path.glob("videos/*/rl-video-episode-0.mp4"))


def test_kl_early_stop_is_taken_by_all_workers(tmp_path, script):
    # each worker's own KL differs; the stop follows their mean, so both stop after the same minibatch
    run, (rank0, rank1) = train_workers(
        tmp_path,
        script,
        *SCRIPTS[script],
        *SMALL,
        "--target-kl",
        "1e-6",
        "--kl-stop",
        "minibatch",
        "--learning-rate",
        "0.01",
        "--no-anneal-lr",
    )
    assert max(run.scalars("charts/minibatch_steps")) < 2 * 2  # stopped early (rank 0's log)
    assert_identical(rank0, rank1)  # at the same minibatch: the weights and Adam's step counts are equal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_rendezvous_on_loopback(tmp_path, script):
    port = free_port()
    nodes = []
    for node_rank in range(2):
        cwd = tmp_path / f"node{node_rank}"
        cwd.mkdir()
        launch = [
            "--nnodes",
            "2",
            "--nproc_per_node",
            "1",
            "--node_rank",
            str(node_rank),
            "--rdzv_backend",
            "c10d",
            "--rdzv_endpoint",
            f"127.0.0.1:{port}",
            "--rdzv_id",
            "ppo37-test",
        ]
        command = worker_command(tmp_path, script, *SCRIPTS[script], *SMALL)
        nodes.append(
            subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", *launch, *command],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        )
    for node in nodes:
        _, stderr = node.communicate(timeout=TIMEOUT)
        assert node.returncode == 0, stderr[-4000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2))
    assert_identical(rank0, rank1)
    assert rank0["global_step"] == total_steps(script)
    assert (tmp_path / "node0" / "runs").exists() and not (tmp_path / "node1" / "runs").exists()  # rank 0 logs


def test_a_dead_worker_ends_all_workers(tmp_path):
    run = torchrun(
        tmp_path, str(REPO / "ppo_discrete.py"), "--env-id", "tests.envs:CrashOnRank1-v0", "--total-timesteps", "100000"
    )
    assert run.returncode != 0
    assert "worker 1 crashes on purpose" in run.stderr
    assert "step 100000" not in run.stdout  # it stopped instead of training on with one worker


def test_a_bad_launch_is_reported_once(tmp_path):
    run = torchrun(tmp_path, str(REPO / "ppo_discrete.py"), "--total-timesteps", "600")
    assert run.returncode != 0
    ours = [line for line in run.stderr.splitlines() if line.startswith("ppo_discrete.py: error:")]
    assert ours == [
        "ppo_discrete.py: error: --total-timesteps 600 is smaller than one batch of 1024 "
        "(--num-envs x --num-steps x workers); use at least 1024"
    ]
    assert (
        f'File "{REPO / "ppo_discrete.py"}"' not in run.stderr
    )  # no traceback through the script (workers' lines may be prefixed)
    assert not (tmp_path / "runs").exists()


def test_a_distributed_run_resumes_with_as_many_workers(tmp_path):
    first, _ = train_workers(tmp_path, "ppo_discrete.py", *SMALL, "--total-timesteps", "256", "--checkpoint-every", "1")
    checkpoint = f"{first.run_dir}/checkpoints/iteration_0000002.pt"
    assert len(torch.load(checkpoint, weights_only=True)["rng"]) == 2  # each worker's RNG states
    resumed, (rank0, rank1) = train_workers(
        tmp_path, "ppo_discrete.py", *SMALL, "--total-timesteps", "512", "--resume", checkpoint
    )
    assert_identical(rank0, rank1)
    assert rank0["global_step"] == 512
    assert resumed.steps("charts/SPS") == [128, 256, 384, 512]  # the same run, continued
    single = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), *SMALL, "--total-timesteps", "512", "--resume", checkpoint],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert single.returncode == 2
    assert single.stderr.strip() == (
        "ppo_discrete.py: error: --resume: the checkpoint was written by 2 worker(s); launch it with torchrun with 2 "
        "workers in all"
    )


TEARDOWN = """
import atexit, os, sys
if os.environ.get("LOCAL_RANK"):  # a torchrun worker
    atexit.register(lambda: sys.stderr.write("interpreter teardown ran\\n"))
"""


@pytest.mark.parametrize(
    "flags, returncode",
    [
        (["--total-timesteps", "512", *SMALL], 0),
        (["--env-id", "tests.envs:NanReward-v0", "--total-timesteps", "512", *SMALL], 1),
    ],
    ids=["finished", "non-finite"],
)
def test_a_worker_exits_without_the_interpreter_teardown(tmp_path, monkeypatch, flags, returncode):
    # After its run a worker sometimes aborted in the interpreter's teardown (SIGABRT, "terminate called without an
    # active exception": C++ threads of the process group destroyed at exit; 16 of 60 non-finite runs on a busy
    # machine). A script's worker now exits with os._exit once its output is flushed: no teardown runs. (Not after bad
    # input: that comes before any process group, and a worker gone at once would let torchrun kill rank 0 before it
    # printed the one line: test_a_bad_launch_is_reported_once.)
    (tmp_path / "sitecustomize.py").write_text(TEARDOWN)  # imported at start-up from PYTHONPATH: reports a teardown
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    run = torchrun(tmp_path, str(REPO / "ppo_discrete.py"), *flags)
    assert run.returncode == returncode, run.stderr[-3000:]
    assert "interpreter teardown ran" not in run.stderr and "terminate called" not in run.stderr
    if returncode == 0:  # all of rank 0's output came out, and its summary
        assert "step 512/512 (100%)" in run.stdout and json.loads(Path(run.run_dir, "summary.json").read_text())
    else:  # rank 0's one line, once
        assert len([line for line in run.stderr.splitlines() if line.startswith("ppo_discrete.py: ")]) == 1
