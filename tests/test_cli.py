"""--help documents every flag; bad input is one stderr line naming the flag, exit code 2."""

import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, TINY, run_script

COMMON_FLAGS = [
    "--exp-name",
    "--seed",
    "--torch-deterministic",
    "--cuda",
    "--track",
    "--wandb-project-name",
    "--wandb-entity",
    "--env-id",
    "--total-timesteps",
    "--num-envs",
    "--num-steps",
    "--vector-mode",
    "--bootstrap-truncation",
    "--ortho-init",
    "--shared-network",
    "--learning-rate",
    "--anneal-lr",
    "--adam-eps",
    "--gae",
    "--gamma",
    "--gae-lambda",
    "--num-minibatches",
    "--update-epochs",
    "--norm-adv",
    "--clip-coef",
    "--anneal-clip",
    "--clip-vloss",
    "--ent-coef",
    "--vf-coef",
    "--max-grad-norm",
    "--target-kl",
    "--kl-stop",
    "--loss",
    "--kl-coef",
    "--kl-target",
    "--save-model",
    "--checkpoint-every",
    "--keep-checkpoints",
    "--resume",
    "--eval-episodes",
    "--eval-checkpoint",
    "--capture-video",
    "--compile",
]
FLAGS = {
    "ppo_discrete.py": COMMON_FLAGS + ["--torch-threads", "--action-masking", "--recurrent", "--lstm-hidden-size"],
    "ppo_continuous.py": COMMON_FLAGS
    + [
        "--torch-threads",
        "--clip-action",
        "--norm-obs",
        "--clip-obs",
        "--norm-reward",
        "--clip-reward",
        "--norm-obs-final",
        "--norm-reward-restart",
        "--state-dependent-std",
    ],
    "ppo_atari.py": COMMON_FLAGS
    + [
        "--env-backend",
        "--noop-max",
        "--frame-skip",
        "--episodic-life",
        "--fire-reset",
        "--frame-size",
        "--clip-reward",
        "--frame-stack",
        "--scale-obs",
        "--recurrent",
        "--lstm-hidden-size",
    ],
}


@pytest.mark.parametrize("script", FLAGS)
def test_help_lists_every_flag_with_an_explanation(script):
    help_text = subprocess.run(
        [sys.executable, str(REPO / script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in FLAGS[script]:
        # each flag's entry carries its docstring: words after the flag and its metavar/default
        assert re.search(rf"{flag}(\s|,|\b)[^\n]*\n?[^\n]*[a-z]{{3,}}", help_text), f"{flag} missing or unexplained"
    for boolean in ["--no-anneal-lr", "--no-gae", "--no-norm-adv", "--no-clip-vloss", "--no-bootstrap-truncation"]:
        assert boolean in help_text
    # it opens with the usage and what the script is: the module docstring, its detail map included
    first_line = (REPO / script).read_text().split("\n")[0].strip('"')
    assert help_text.startswith("usage: ") and first_line in help_text.split("--exp-name")[0]
    assert "DETAIL MAP" in help_text and "  5  GAE " in help_text
    # then two groups: the algorithm's flags (fixed for a run's life), run control (may change on --resume)
    algorithm, run_control = help_text.split("algorithm options")[1].split("run-control options")
    assert "--learning-rate" in algorithm and "--seed" in algorithm and "--total-timesteps" not in algorithm
    assert "--total-timesteps" in run_control and "--resume" in run_control and "--learning-rate" not in run_control
    assert help_text.count("(default:") >= len(FLAGS[script])  # every default kept


SMALL = ["--num-envs", "2", "--num-steps", "64"]  # a batch of 128 in both scripts
COMMON_BAD = [
    (["--env-id", "no_such_module:Env-v0"], r"--env-id no_such_module:Env-v0: .*no_such_module"),
    (
        [*SMALL, "--num-minibatches", "3"],
        r"--num-minibatches 3 does not divide the batch of 128 .*use one of \[1, 2, 4",
    ),
    ([*SMALL, "--total-timesteps", "100"], r"--total-timesteps 100 is smaller than one batch of 128.*at least 128"),
    (["--num-envs", "0"], r"--num-envs must be a positive integer, got 0"),
    (["--num-steps", "-5"], r"--num-steps must be a positive integer, got -5"),
    (["--update-epochs", "0"], r"--update-epochs must be a positive integer, got 0"),
    (["--learning-rate", "0"], r"--learning-rate must be a positive number, got 0"),
    (["--clip-coef", "-0.1"], r"--clip-coef must be a positive number, got -0.1"),
    (["--target-kl", "0"], r"--target-kl must be a positive number, got 0"),
    (["--gamma", "1.5"], r"--gamma must be in \[0, 1\], got 1.5"),
    (["--gae-lambda", "-1"], r"--gae-lambda must be in \[0, 1\], got -1"),
    (["--ent-coef", "-1"], r"--ent-coef must be zero or positive, got -1"),
    (["--checkpoint-every", "-1"], r"--checkpoint-every must be zero or positive, got -1"),
    (["--keep-checkpoints", "0"], r"--keep-checkpoints must be a positive integer, got 0"),
    (["--eval-episodes", "0"], r"--eval-episodes must be a positive integer, got 0"),
    (["CartPole-v1"], r"CartPole-v1: the script takes flags only; for an env id, --env-id CartPole-v1"),
    (["--resume", "no/such.pt"], r"--resume no/such\.pt is not a readable checkpoint \(\[Errno 2\] No such file"),
    (["--eval-checkpoint", "no/such.pt"], r"--eval-checkpoint no/such\.pt is not a readable checkpoint \(\[Errno 2\]"),
    (["--learning-rate", "inf"], r"--learning-rate must be finite, got inf"),
    (["--ent-coef", "inf"], r"--ent-coef must be finite, got inf"),
    (["--vf-coef", "inf"], r"--vf-coef must be finite, got inf"),
    (["--seed", "-1"], r"--seed must be in \[0, 4294967295\] \(numpy's seed range\), got -1"),
    (["--seed", "4294967296"], r"--seed must be in \[0, 4294967295\]"),
    (
        ["--num-envs", "1", "--num-steps", "4", "--num-minibatches", "4"],
        r"--norm-adv: one sample has no standard deviation; use fewer minibatches or --no-norm-adv",
    ),
]
HUGE_ROLLOUT = (
    ["--num-steps", "1000000000000", "--total-timesteps", "100000000000000"],
    r"--num-envs \d+ x --num-steps 1000000000000.*: the rollout buffers need [\d,.]+ GiB, "
    r"more than the [\d,.]+ GiB of cpu",
)
BAD_INPUT = [(script, *case) for script in FLAGS for case in COMMON_BAD] + [
    ("ppo_discrete.py", ["--env-id", "NoSuchEnv-v0"], r"--env-id NoSuchEnv-v0: .*pprint_registry"),
    ("ppo_discrete.py", ["--env-id", "ALE/Pong-v5"], r"--env-id ALE/Pong-v5: images \(210, 160, 3\); ppo_atari.py"),
    ("ppo_continuous.py", ["--env-id", "CarRacing-v3"], r"CarRacing-v3: images \(96, 96, 3\), Box.*none of our"),
    (
        "ppo_continuous.py",
        ["--env-id", "tests.envs:SequenceObs-v0"],
        r"a Sequence observation space does not flatten",
    ),
    ("ppo_continuous.py", ["--env-id", "NoSuchEnv-v0"], r"--env-id NoSuchEnv-v0: .*pprint_registry"),
    (
        "ppo_discrete.py",
        ["--env-kwargs", "no_such_kwarg=1"],
        r"--env-id CartPole-v1: .*keyword argument 'no_such_kwarg'",
    ),
    ("ppo_atari.py", ["--env-id", "NoSuchGameNoFrameskip-v4"], r"--env-id NoSuchGameNoFrameskip-v4: .*doesn't exist"),
    ("ppo_discrete.py", ["--env-id", "tests.envs:CountingEnv-v0", "--capture-video"], r"--capture-video: .* drop"),
    ("ppo_continuous.py", ["--env-id", "tests.envs:CountingBox-v0", "--capture-video"], r"--capture-video: .* drop"),
    (
        "ppo_atari.py",
        ["--env-id", "CartPole-v1"],
        r"--env-id CartPole-v1 has no image observations.*; use ppo_discrete\.py",
    ),
    (
        "ppo_atari.py",
        ["--env-id", "Pendulum-v1"],
        r"--env-id Pendulum-v1 has no image observations.*; use ppo_continuous",
    ),
    (
        "ppo_atari.py",
        ["--env-id", "CarRacing-v3"],
        r"CarRacing-v3: \(96, 96, 3\) images, Box.*none of our scripts fits",
    ),
    ("ppo_atari.py", ["--env-id", "nosuchmodule:Env-v0"], r"No module named 'nosuchmodule'.*here or on PYTHONPATH"),
    (  # (short: were the kwargs ignored, the run would end at once, exit 0)
        "ppo_atari.py",
        ["--env-kwargs", "no_such_kwarg=1", "--total-timesteps", "256", "--num-envs", "2", "--num-steps", "128"],
        r"--env-id Breakout.*keyword argument 'no_such_kwarg'",
    ),
    (
        "ppo_atari.py",
        ["--env-id", "tests.envs:BrightOrDark-v0", "--env-backend", "ale"],
        r"--env-backend ale takes ALE",
    ),
    (
        "ppo_atari.py",
        ["--env-id", "tests.envs:UnrenderedBrightOrDark-v0", "--capture-video"],
        r"--capture-video: tests.envs:UnrenderedBrightOrDark-v0 renders no rgb_array frames to record; drop",
    ),
    (
        "ppo_atari.py",
        ["--env-kwargs", "repeat_action_probability=0.25", "--env-backend", "ale"],
        r"--env-backend ale takes ALE games, and neither --env-kwargs nor --capture-video",
    ),
    ("ppo_atari.py", ["--frame-size", "20"], r"--frame-size 20 is too small for the Nature CNN; use 36 or more"),
    ("ppo_discrete.py", *HUGE_ROLLOUT),
    ("ppo_continuous.py", ["--env-id", "Pendulum-v1", *HUGE_ROLLOUT[0]], HUGE_ROLLOUT[1]),  # MuJoCo warns on stderr
    ("ppo_atari.py", *HUGE_ROLLOUT),
    (
        "ppo_atari.py",
        ["--frame-size", "100000"],
        r"--frame-size 100000\^2: the rollout buffers need [\d,.]+ GiB, more than",
    ),
    ("ppo_atari.py", ["--frame-skip", "0"], r"--frame-skip must be a positive integer, got 0"),
    ("ppo_atari.py", ["--noop-max", "-1"], r"--noop-max must be zero or positive, got -1"),
    (
        "ppo_atari.py",
        ["--recurrent", "--num-minibatches", "16"],
        r"--recurrent: --num-minibatches 16 does not divide --num-envs 8; use one of \[1, 2, 4, 8\]",
    ),
    (
        "ppo_atari.py",
        ["--recurrent", "--lstm-hidden-size", "0"],
        r"--lstm-hidden-size must be a positive integer, got 0",
    ),
    (
        "ppo_discrete.py",
        ["--recurrent", "--num-minibatches", "8"],
        r"--recurrent: --num-minibatches 8 does not divide --num-envs 4; use one of \[1, 2, 4\]",
    ),
    ("ppo_discrete.py", ["--recurrent", "--compile"], r"--compile does not take --recurrent .*drop --compile"),
    ("ppo_atari.py", ["--recurrent", "--compile"], r"--compile does not take --recurrent .*drop --compile"),
    (
        "ppo_discrete.py",
        ["--env-id", "Pendulum-v1"],
        r"--env-id Pendulum-v1 has a Box action space.*use ppo_continuous\.py",
    ),
    ("ppo_discrete.py", ["--action-masking"], r"--action-masking: CartPole-v1 puts no 'action_mask' in its info"),
    (
        "ppo_continuous.py",
        ["--env-id", "CartPole-v1"],
        r"--env-id CartPole-v1: Discrete actions \(Discrete ones: ppo_discrete\.py\)",
    ),
    ("ppo_continuous.py", ["--clip-obs", "-1"], r"--clip-obs must be zero or positive, got -1"),
    # (a budget too small for one batch: a check that lets the flag pass fails at once, on another flag)
    (
        "ppo_discrete.py",
        ["--eval-every", "-1", "--total-timesteps", "1"],
        r"--eval-every must be zero or positive, got -1",
    ),
    (
        "ppo_continuous.py",
        ["--eval-every", "-2", "--total-timesteps", "1"],
        r"--eval-every must be zero or positive, got -2",
    ),
    (
        "ppo_atari.py",
        ["--eval-every", "-3", "--total-timesteps", "1"],
        r"--eval-every must be zero or positive, got -3",
    ),
    (
        "ppo_atari.py",
        ["--env-backend", "ale", "--capture-video"],
        r"--env-backend ale takes ALE games, and neither .*--capture-video \(it does not render\); drop them",
    ),
]


@pytest.mark.parametrize("script, flags, expected", BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_input_is_one_clear_line_and_exit_2(run_fails, script, flags, expected):
    line = run_fails(script, *flags)
    assert line.startswith(f"{script}: error: ")
    assert re.search(expected, line), line


def test_unbounded_actions_train_without_clipping(train):
    # --clip-action (the default) clips to infinite bounds: nothing, as CleanRL's ClipAction and SB3 do there
    run = train("ppo_continuous.py", *TINY, "--env-id", "tests.envs:UnboundedBox-v0")
    # the env pays -sum(a^2) over 16 steps: std-1 samples of 2 components, unclipped, cost ~2 a step
    returns = run.scalars("charts/episodic_return")
    assert returns and np.mean(returns) < -10


@pytest.mark.parametrize("script", FLAGS)
def test_unknown_flag_is_rejected_by_the_parser(tmp_path, script):
    # tyro's own message may span lines; what matters is exit 2, no traceback, nothing written
    run = run_script(script, "--no-such-flag", *TINY, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "--no-such-flag" in run.stderr
    assert not (tmp_path / "runs").exists()
