"""--help documents every flag; bad input is one stderr line naming the flag, exit code 2."""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY, run_script

FLAGS = [
    "--exp-name", "--seed", "--torch-deterministic", "--cuda", "--track", "--wandb-project-name",
    "--wandb-entity", "--env-id", "--total-timesteps", "--num-envs", "--num-steps", "--vector-mode",
    "--bootstrap-truncation", "--action-masking", "--ortho-init", "--shared-network",
    "--learning-rate", "--anneal-lr", "--adam-eps", "--gae", "--gamma", "--gae-lambda",
    "--num-minibatches", "--update-epochs", "--norm-adv", "--clip-coef", "--anneal-clip",
    "--clip-vloss", "--ent-coef", "--vf-coef", "--max-grad-norm", "--target-kl", "--kl-stop",
    "--loss", "--kl-coef", "--kl-target",
]  # fmt: skip


def test_help_lists_every_flag_with_an_explanation():
    help_text = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in FLAGS:
        # each flag's entry carries its docstring: words after the flag and its metavar/default
        match = re.search(rf"{flag}(\s|,|\b)[^\n]*\n?[^\n]*[a-z]{{3,}}", help_text)
        assert match, f"{flag} missing or unexplained in --help"
    for boolean in ["--no-anneal-lr", "--no-gae", "--no-norm-adv", "--no-clip-vloss", "--no-bootstrap-truncation"]:
        assert boolean in help_text


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--env-id", "NoSuchEnv-v0"], r"--env-id NoSuchEnv-v0: .*pprint_registry"),
        (["--env-id", "no_such_module:Env-v0"], r"--env-id no_such_module:Env-v0: .*no_such_module"),
        (["--env-id", "Pendulum-v1"], r"--env-id Pendulum-v1 has a Box action space.*ppo_continuous\.py"),
        (["--num-minibatches", "3"], r"--num-minibatches 3 does not divide the batch of 512 .*use one of \[1, 2, 4"),
        (["--total-timesteps", "100"], r"--total-timesteps 100 is smaller than one batch of 512.*at least 512"),
        (["--num-envs", "0"], r"--num-envs must be a positive integer, got 0"),
        (["--num-steps", "-5"], r"--num-steps must be a positive integer, got -5"),
        (["--update-epochs", "0"], r"--update-epochs must be a positive integer, got 0"),
        (["--learning-rate", "0"], r"--learning-rate must be a positive number, got 0"),
        (["--clip-coef", "-0.1"], r"--clip-coef must be a positive number, got -0.1"),
        (["--target-kl", "0"], r"--target-kl must be a positive number, got 0"),
        (["--gamma", "1.5"], r"--gamma must be in \(0, 1\], got 1.5"),
        (["--gae-lambda", "-1"], r"--gae-lambda must be in \[0, 1\], got -1"),
        (["--ent-coef", "-1"], r"--ent-coef must be zero or positive, got -1"),
        (["--action-masking"], r"--action-masking: CartPole-v1 puts no 'action_mask' in its info"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_bad_input_is_one_clear_line_and_exit_2(run_fails, flags, expected):
    line = run_fails("ppo_discrete.py", *flags)
    assert line.startswith("ppo_discrete.py: error: ")
    assert re.search(expected, line), line


def test_unknown_flag_is_rejected_by_the_parser(tmp_path):
    # tyro's own message may span lines; what matters is exit 2, no traceback, nothing written
    run = run_script("ppo_discrete.py", "--no-such-flag", *TINY, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "--no-such-flag" in run.stderr
    assert not (tmp_path / "runs").exists()
