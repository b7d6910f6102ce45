"""Runs that survive: checkpoints, resume, signals, the non-finite guard, evaluation, video,
determinism and safe loading, in each script."""

import glob
import importlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ONE_STEP, REPO, TINY, Run, assert_identical, run_script, train_in

# each script on an env whose episodes end within the tiny budgets (Pong: a game lost 0-21 in ~800 steps); Atari
# with one Adam step per iteration (ONE_STEP)
SCRIPTS = {
    "ppo_discrete.py": [],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1"],
    "ppo_atari.py": ["--env-id", "PongNoFrameskip-v4", *ONE_STEP],
}
TWICE = ["--num-envs", "2", "--num-steps", "64", "--total-timesteps", "2048"]  # 16 iterations
SCHEDULES = ["--anneal-clip", "--loss", "kl-penalty", "--kl-target", "0.001"]  # every schedule moves


def checkpoints(run: Run) -> list[str]:
    return sorted(glob.glob(f"{run.run_dir}/checkpoints/*.pt"))


def module(script: str):
    return importlib.import_module(script[:-3])


@pytest.fixture(params=SCRIPTS)
def script(request):
    return request.param


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """full_runs(script) -> 16 iterations in one go, a checkpoint every 4 (the last 2 kept), the final model."""
    cache = {}

    def get(script):
        if script not in cache:
            cache[script] = train_in(
                tmp_path_factory.mktemp("full"),
                script,
                *SCRIPTS[script],
                *TWICE,
                *SCHEDULES,
                "--checkpoint-every",
                "4",
                "--keep-checkpoints",
                "2",
                "--save-model",
                "--eval-episodes",
                "3",
            )
        return cache[script]

    return get


@pytest.fixture
def full_run(full_runs, script):
    return full_runs(script)


def test_checkpoints_are_kept_and_hold_the_run(full_run, script):
    assert [os.path.basename(path) for path in checkpoints(full_run)] == [
        "iteration_0000012.pt",
        "iteration_0000016.pt",
    ]
    checkpoint = module(script).load_checkpoint(checkpoints(full_run)[0], "--resume")
    assert (checkpoint["iteration"], checkpoint["global_step"]) == (12, 12 * 128)
    assert checkpoint["kl_coef"] == full_run.scalars("charts/kl_coef")[12]  # the beta iteration 13 used
    (rng,) = checkpoint["rng"]  # one worker: its python, torch and numpy states
    assert set(rng) == {"python", "torch", "numpy"} and checkpoint["optimizer"]["state"]
    # the annealed learning rate is the one Adam stepped with, not only the one logged
    lr = checkpoint["optimizer"]["param_groups"][0]["lr"]
    assert (
        lr == pytest.approx(full_run.scalars("charts/learning_rate")[11], rel=1e-6)
        and lr < 0.5 * full_run.scalars("charts/learning_rate")[0]
    )


def test_resuming_an_older_checkpoint_keeps_the_new_ones(full_run, tmp_path, script):
    # the directory still holds the newer iteration 16 (and a write killed mid-way); the resumed run writes 15
    shutil.copytree(full_run.run_dir, tmp_path / "runs" / os.path.basename(full_run.run_dir))
    run = Run(0, "", "", tmp_path)
    open(f"{run.run_dir}/checkpoints/iteration_0000099.pt.tmp", "wb").write(b"partial")
    resumed = run_script(
        script,
        *SCRIPTS[script],
        *TWICE,
        *SCHEDULES,
        "--checkpoint-every",
        "3",
        "--keep-checkpoints",
        "1",
        "--resume",
        checkpoints(run)[0],
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert os.listdir(f"{run.run_dir}/checkpoints") == ["iteration_0000015.pt"]


def test_resume_continues_the_schedules(full_run, train, script):
    resumed = train(script, *SCRIPTS[script], *TWICE, *SCHEDULES, "--resume", checkpoints(full_run)[0])
    assert resumed.run_dir.endswith(os.path.basename(full_run.run_dir)), "a resumed run keeps its run name"
    for tag in ["charts/learning_rate", "charts/clip_coef", "charts/minibatch_steps"]:
        assert resumed.steps(tag) == full_run.steps(tag)[12:], tag  # the global step continues
        assert resumed.scalars(tag) == full_run.scalars(tag)[12:], tag
    # beta continues from the saved value (later values follow each run's own KL measurements)
    assert resumed.scalars("charts/kl_coef")[0] == full_run.scalars("charts/kl_coef")[12]


def test_resume_restores_the_state_bit_for_bit(full_run, train, script):
    # resuming at the run's end trains nothing, so the model it saves is the loaded state itself
    resumed = train(
        script,
        *SCRIPTS[script],
        *TWICE,
        *SCHEDULES,
        "--resume",
        checkpoints(full_run)[-1],
        "--save-model",
        "--eval-episodes",
        "3",
    )
    before = module(script).load_checkpoint(checkpoints(full_run)[-1], "--resume")
    after = module(script).load_checkpoint(f"{resumed.run_dir}/{script[:-3]}.pt", "--resume")
    for key in ["model", "optimizer", "rng", "kl_coef", "global_step", "iteration", "obs_rms", "reward_rms"]:
        if key in before or key in after:  # normalisation statistics: ppo_continuous.py
            assert_identical(before[key], after[key], key)
    assert resumed.scalars("eval/episodic_return") == full_run.scalars("eval/episodic_return")


def test_evaluation_reproduces_the_saved_model(full_run, script, tmp_path):
    (model_path,) = glob.glob(f"{full_run.run_dir}/{script[:-3]}.pt")
    logged = full_run.scalars("eval/episodic_return")
    assert len(logged) == 3
    returns = module(script).evaluate(model_path, 3, seed=1 + 10_000)
    np.testing.assert_allclose(returns, logged, rtol=1e-6)  # logged as float32
    proc = subprocess.run(
        [sys.executable, str(REPO / script), "--eval-checkpoint", model_path, "--eval-episodes", "3"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{np.mean(returns):.2f} +- {np.std(returns):.2f} over 3 episodes" in proc.stdout
    assert not (tmp_path / "runs").exists()  # an evaluation writes only its JSON, next to the checkpoint:
    result = json.loads(Path(model_path.removesuffix(".pt") + ".eval.json").read_text())
    assert result["checkpoint"] == model_path and result["seed"] == 1 + 10_000
    np.testing.assert_allclose(result["returns"], returns, rtol=1e-12)
    assert result["mean"] == pytest.approx(np.mean(returns)) and result["std"] == pytest.approx(np.std(returns))
    again = subprocess.run(  # or where --eval-json says
        [
            sys.executable,
            str(REPO / script),
            "--eval-checkpoint",
            model_path,
            "--eval-episodes",
            "1",
            "--eval-json",
            "e",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and json.loads((tmp_path / "e").read_text())["returns"] == returns[:1], again.stderr


@pytest.mark.parametrize("clip_reward", [True, False])
def test_an_atari_checkpoint_of_the_boolean_clip_reward_still_loads(full_runs, tmp_path, clip_reward):
    # --clip-reward was a bool in ppo_atari.py, now a float as in ppo_continuous.py: True / False read as 1 / 0
    checkpoint = torch.load(checkpoints(full_runs("ppo_atari.py"))[0], weights_only=True)
    torch.save({**checkpoint, "args": {**checkpoint["args"], "clip_reward": clip_reward}}, tmp_path / "old.pt")
    loaded = module("ppo_atari.py").load_checkpoint(str(tmp_path / "old.pt"), "--resume")
    assert loaded["args"]["clip_reward"] == float(clip_reward)


def test_atari_evaluates_on_the_back_end_it_trained_on(full_runs, tmp_path, monkeypatch, run_fails):
    m = module("ppo_atari.py")
    checkpoint = torch.load(checkpoints(full_runs("ppo_atari.py"))[0], weights_only=True)
    checkpoint["args"]["env_backend"] = "ale"
    path = str(tmp_path / "ale.pt")
    torch.save(checkpoint, path)
    backends, make_envs = [], m.make_envs
    monkeypatch.setattr(
        m,
        "make_envs",
        lambda args, video_folder=None: backends.append(args.env_backend) or make_envs(args, video_folder),
    )
    assert len(m.evaluate(path, 1)) == 1 and backends == ["ale"]
    line = run_fails("ppo_atari.py", "--eval-checkpoint", path, "--capture-video")
    assert "--env-backend ale takes ALE games, and neither --env-kwargs nor --capture-video" in line, line


def start(cwd, script, *flags) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # lines arrive as printed
    return subprocess.Popen(
        [sys.executable, str(REPO / script), *SCRIPTS[script], *flags],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_training(proc: subprocess.Popen, cwd) -> None:
    """Until the run has set up and trained for a moment."""
    deadline = time.time() + 120
    while not glob.glob(str(cwd / "runs" / "*" / "events.out.tfevents.*")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.2)
    time.sleep(2)


@pytest.mark.parametrize(
    "script, signum, code, vector_mode",
    [
        ("ppo_discrete.py", signal.SIGINT, 130, "sync"),
        ("ppo_discrete.py", signal.SIGTERM, 143, "sync"),
        ("ppo_discrete.py", signal.SIGINT, 130, "async"),
        ("ppo_discrete.py", signal.SIGTERM, 143, "async"),
        ("ppo_continuous.py", signal.SIGINT, 130, "async"),
        ("ppo_atari.py", signal.SIGINT, 130, "async"),
        ("ppo_atari.py", signal.SIGTERM, 143, "sync"),
    ],
    ids=str,
)
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, script, signum, code, vector_mode):
    proc = start(
        tmp_path,
        script,
        "--total-timesteps",
        "10000000",
        "--num-envs",
        "2",
        "--num-steps",
        "32",
        "--vector-mode",
        vector_mode,
    )
    wait_for_training(proc, tmp_path)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr, stderr
    (path,) = glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))
    rel = os.path.relpath(path, tmp_path)
    # --resume alone continues with the run's flags (--vector-mode too: saved in the checkpoint)
    assert stderr.strip().splitlines()[-1].endswith(f"continue with: python {REPO / script} --resume {rel}")
    assert module(script).load_checkpoint(path, "--resume")["global_step"] > 0
    (summary,) = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))
    summary = json.loads(Path(summary).read_text())
    assert summary["ended"] == f"signal {signal.Signals(signum).name}" and summary["last_checkpoint"] == rel


LONG_ROLLOUT = {
    "ppo_discrete.py": ["--num-steps", "100000"],
    "ppo_continuous.py": ["--num-steps", "100000"],
    "ppo_atari.py": ["--num-envs", "1", "--num-steps", "5000"],
}


def test_second_sigint_stops_at_once(tmp_path, script):
    proc = start(tmp_path, script, "--total-timesteps", "10000000", *LONG_ROLLOUT[script])
    wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))


@pytest.mark.parametrize(
    "script, flags, expected",
    [
        # an env that pays NaN: the first loss is NaN
        ("ppo_discrete.py", ["--env-id", "tests.envs:NanReward-v0"], "iteration 1: the loss is nan"),
        # a step far too large: the weights blow up within the first iteration
        ("ppo_discrete.py", ["--learning-rate", "1e30", "--no-anneal-lr"], "iteration 1: the "),
        ("ppo_continuous.py", ["--learning-rate", "1e30", "--no-anneal-lr"], "iteration 1: the "),
        # (Atari: two Adam steps, as its SCRIPTS flags take one per iteration)
        ("ppo_atari.py", ["--learning-rate", "1e30", "--no-anneal-lr", "--update-epochs", "2"], "iteration 1: the "),
    ],
    ids=str,
)
def test_non_finite_guard_stops_without_saving(tmp_path, script, flags, expected):
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *SCRIPTS[script], *TINY, *flags, "--checkpoint-every", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]  # after ale-py's banner
    assert f"{script}: stopped: {expected}" in line and "stopped without saving (last good checkpoint: none)" in line, (
        line
    )
    assert not glob.glob(str(tmp_path / "runs" / "*" / "checkpoints" / "*.pt"))
    (summary,) = glob.glob(str(tmp_path / "runs" / "*" / "summary.json"))
    assert json.loads(Path(summary).read_text())["ended"] == "non-finite"


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def malformed(tmp_path, full_run, script, kind: str) -> str:
    path = str(tmp_path / f"{kind}.pt")
    if kind == "pickle-with-code":
        with open(path, "wb") as f:
            pickle.dump({"format": module(script).CHECKPOINT_FORMAT, "model": RunsCode()}, f)
    elif kind == "truncated":
        data = open(checkpoints(full_run)[0], "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif kind == "other-script":
        other = next(name for name in SCRIPTS if name != script)
        torch.save({"format": module(other).CHECKPOINT_FORMAT, "model": {}}, path)
    elif kind in ("missing-key", "wrong-shape"):
        checkpoint = torch.load(checkpoints(full_run)[0], weights_only=True)
        if kind == "missing-key":
            del checkpoint["optimizer"]
        else:
            name, weight = next(iter(checkpoint["model"].items()))
            checkpoint["model"][name] = torch.zeros(weight.shape[0] + 1, *weight.shape[1:])
        torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    "kind, flags, expected",
    [
        ("pickle-with-code", [], r"is not a readable checkpoint"),
        ("truncated", [], r"is not a readable checkpoint"),
        ("other-script", [], r"is not a whole checkpoint of {script} \(ppo37 ppo_\w+\.py checkpoint v2\)"),
        ("missing-key", [], r"is not a whole checkpoint of {script} \(missing optimizer\)"),
        ("wrong-shape", [], r"does not fit the network of its own flags \(.*size mismatch"),
        (
            "mismatched-env",
            ["--env-id", "BreakoutNoFrameskip-v4"],
            r"trained with --env-id \S+, this command has --env-id BreakoutNoFrameskip-v4",
        ),
    ],
)
def test_malformed_checkpoints_are_refused(run_fails, tmp_path, full_run, script, kind, flags, expected):
    path = checkpoints(full_run)[0] if kind == "mismatched-env" else malformed(tmp_path, full_run, script, kind)
    for flag in ["--resume", "--eval-checkpoint"] if kind != "mismatched-env" else ["--resume"]:
        line = run_fails(script, *SCRIPTS[script], *TWICE, *SCHEDULES, *flags, flag, path)
        assert line.startswith(f"{script}: error: {flag}") and re.search(
            expected.format(script=re.escape(script)), line
        ), line
    assert not (tmp_path / "pwned").exists(), "loading ran the pickle's code"


@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_same_seed_same_metrics(train, script, vector_mode):
    runs = [train(script, *SCRIPTS[script], *TINY, "--vector-mode", vector_mode) for _ in range(2)]
    for tag in ["losses/value_loss", "losses/policy_loss", "losses/approx_kl", "charts/episodic_return"]:
        assert runs[0].scalars(tag) == runs[1].scalars(tag), tag


VIDEO_ENVS = [(script, SCRIPTS[script]) for script in SCRIPTS] + [
    ("ppo_continuous.py", ["--env-id", "Hopper-v5"])
]  # MuJoCo: EGL


@pytest.mark.parametrize("script, env", VIDEO_ENVS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_capture_video_writes_training_and_evaluation_videos(train, script, env):
    run = train(script, *env, *TINY, "--capture-video", "--save-model", "--eval-episodes", "1")
    name = os.path.basename(run.run_dir)
    assert glob.glob(str(run.cwd / "videos" / name / "*.mp4"))
    assert glob.glob(str(run.cwd / "videos" / name / "eval" / "*.mp4"))
    assert all(
        os.path.getsize(path) > 1000 for path in glob.glob(str(run.cwd / "videos" / "**" / "*.mp4"), recursive=True)
    )


def test_resume_alone_continues_with_the_saved_flags(tmp_path):
    """`--resume PATH` alone continues the run as it was started (the checkpoint's flags are the defaults): the same
    checkpoints as a resumption that repeats every flag; a changed algorithm flag is refused, naming it."""
    flags = [
        *TWICE,
        "--learning-rate",
        "1e-3",
        "--shared-network",
        "--checkpoint-every",
        "4",
        "--keep-checkpoints",
        "9",
    ]
    (tmp_path / "run").mkdir()
    run = train_in(tmp_path / "run", "ppo_discrete.py", *flags)
    resume = os.path.relpath(checkpoints(run)[0], tmp_path / "run")  # iteration 4 of 16
    resumed = {}
    for name, command in [("alone", []), ("repeated", flags)]:
        shutil.copytree(tmp_path / "run", tmp_path / name)
        copy = Run(0, "", "", tmp_path / name)
        for later in checkpoints(copy)[1:]:
            os.remove(later)
        train_in(tmp_path / name, "ppo_discrete.py", *command, "--resume", resume)
        resumed[name] = [torch.load(path, weights_only=True) for path in checkpoints(copy)]
    assert len(resumed["alone"]) == len(resumed["repeated"]) == 4  # iterations 4, 8, 12, 16
    for alone, repeated in zip(resumed["alone"], resumed["repeated"], strict=True):
        assert alone["args"] == repeated["args"]
        assert_identical(alone["model"], repeated["model"], f"iteration {alone['iteration']}")
    refused = run_script("ppo_discrete.py", "--resume", resume, "--learning-rate", "5e-4", cwd=tmp_path / "alone")
    assert refused.returncode == 2 and "drop --learning-rate" in refused.stderr.strip().splitlines()[-1]
