"""Tiny runs of ppo_discrete.py with each flag away from its default; each checks what it logged."""

import glob

import numpy as np
import pytest

from ppo_discrete import adapt_kl_coef
from tests.conftest import TINY, train_in

SCRIPT = "ppo_discrete.py"
ITERATIONS = 8  # TINY: 1024 steps / (2 envs x 64 steps)
LOSSES = ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The defaults on the TINY budget, for runs that must differ from (or equal) it."""
    return train_in(tmp_path_factory.mktemp("baseline"), SCRIPT, *TINY)


def test_defaults_anneal_the_learning_rate_and_keep_the_clip(baseline):
    lr = baseline.scalars("charts/learning_rate")
    np.testing.assert_allclose(lr, 2.5e-4 * (1 - np.arange(ITERATIONS) / ITERATIONS), rtol=1e-6)
    assert baseline.scalars("charts/clip_coef") == pytest.approx([0.2] * ITERATIONS)
    assert baseline.scalars("charts/minibatch_steps") == [16] * ITERATIONS  # 4 epochs x 4 minibatches
    for tag in LOSSES + ["losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance", "charts/SPS"]:
        values = baseline.scalars(tag)
        assert len(values) == ITERATIONS and np.all(np.isfinite(values)), tag
    assert len(baseline.scalars("charts/episodic_return")) > 20


@pytest.mark.parametrize(
    "flags",
    [
        ["--no-ortho-init"], ["--adam-eps", "1e-3"], ["--no-gae"], ["--gamma", "0.9", "--gae-lambda", "0.8"],
        ["--no-norm-adv"], ["--no-clip-vloss"], ["--ent-coef", "0", "--vf-coef", "1", "--max-grad-norm", "5"],
        ["--shared-network"], ["--no-bootstrap-truncation"], ["--seed", "2"],
    ],
    ids=" ".join,
)
def test_flag_changes_training(train, baseline, flags):
    # --no-bootstrap-truncation: CartPole's 500-step limit is not reached in 1024 steps, so
    # a short time limit makes truncations happen
    extra = ["--env-id", "tests.envs:CountingEnv-v0"] if flags == ["--no-bootstrap-truncation"] else []
    run = train(SCRIPT, *TINY, *flags, *extra)
    reference = train(SCRIPT, *TINY, *extra) if extra else baseline
    values = run.scalars("losses/value_loss")
    assert len(values) == ITERATIONS and np.all(np.isfinite(values))
    # same seed and budget: any difference in the losses means the flag reached the computation
    assert values != reference.scalars("losses/value_loss")


@pytest.mark.parametrize("flags", [["--vector-mode", "async"], ["--no-torch-deterministic", "--no-cuda"]], ids=" ".join)
def test_flag_keeps_results_identical(train, baseline, flags):
    # subprocess envs, and the CPU device, must not change a seeded run's numbers
    run = train(SCRIPT, *TINY, *flags)
    for tag in LOSSES + ["charts/episodic_return"]:
        assert run.scalars(tag) == baseline.scalars(tag), tag


def test_constant_learning_rate(train):
    run = train(SCRIPT, *TINY, "--no-anneal-lr", "--learning-rate", "1e-3")
    assert run.scalars("charts/learning_rate") == pytest.approx([1e-3] * ITERATIONS)


def test_anneal_clip(train):
    run = train(SCRIPT, *TINY, "--anneal-clip", "--clip-coef", "0.1")
    np.testing.assert_allclose(run.scalars("charts/clip_coef"), 0.1 * (1 - np.arange(ITERATIONS) / ITERATIONS), rtol=1e-6)


def test_minibatches_and_epochs(train):
    run = train(SCRIPT, *TINY, "--num-minibatches", "2", "--update-epochs", "3")
    assert run.scalars("charts/minibatch_steps") == [6] * ITERATIONS


def test_target_kl_stops_after_the_epoch(train):
    # CleanRL: the KL of an epoch's last minibatch is checked when the epoch ends (a constant
    # learning rate keeps the KL of late iterations above the target)
    run = train(SCRIPT, *TINY, "--target-kl", "1e-10", "--kl-stop", "epoch", "--no-anneal-lr")
    assert run.scalars("charts/minibatch_steps") == [4] * ITERATIONS


def test_target_kl_stops_before_a_minibatch_step(train):
    # SB3: the first minibatch sees KL 0 and steps; the second sees KL > 1.5 x target and stops
    run = train(SCRIPT, *TINY, "--target-kl", "1e-10", "--kl-stop", "minibatch", "--no-anneal-lr")
    assert run.scalars("charts/minibatch_steps") == [1] * ITERATIONS


def test_kl_penalty_adapts_beta(train):
    run = train(SCRIPT, *TINY, "--loss", "kl-penalty", "--kl-coef", "0.5", "--kl-target", "0.001")
    betas, kls = run.scalars("charts/kl_coef"), run.scalars("losses/kl_after_update")
    assert len(betas) == len(kls) == ITERATIONS and betas[0] == 0.5
    for i in range(ITERATIONS - 1):
        assert betas[i + 1] == pytest.approx(adapt_kl_coef(betas[i], kls[i], 0.001))
    assert len(set(betas)) > 1, "beta never adapted"


def test_exp_name_and_seed_name_the_run(train):
    run = train(SCRIPT, *TINY, "--exp-name", "my_exp", "--seed", "7")
    assert "CartPole-v1__my_exp__7__" in run.run_dir


def test_track_logs_to_wandb_offline(train):
    run = train(SCRIPT, *TINY, "--track", "--wandb-project-name", "ppo37-test", env={"WANDB_MODE": "offline"})
    (wandb_run,) = glob.glob(str(run.cwd / "wandb" / "offline-run-*"))
    (record,) = glob.glob(f"{wandb_run}/run-*.wandb")
    assert b"CartPole-v1" in open(record, "rb").read(), "the run's Args are not in the W&B record"
    # sync_tensorboard: the TensorBoard events are mirrored into the W&B run
    assert glob.glob(f"{wandb_run}/files/runs/*/events.out.tfevents.*")
