"""Tiny runs of each script with each flag away from its default; each checks what it logged."""

import glob

import numpy as np
import pytest
import torch

from ppo_continuous import evaluate
from ppo_discrete import Args as DiscreteArgs
from ppo_discrete import adapt_kl_coef, make_envs
from tests.conftest import ONE_STEP, TINY, train_in

ITERATIONS = 8  # TINY: 1024 steps / (2 envs x 64 steps)
LOSSES = ["losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"]
# Per script: the tiny budget (4 epochs x 4 minibatches), its env, its default learning rate, and
# an env with time-limit truncations inside the budget
SCRIPTS = {
    "ppo_discrete.py": {
        "flags": TINY,
        "env_id": "CartPole-v1",
        "lr": 2.5e-4,
        "truncating": ["--env-id", "tests.envs:CountingEnv-v0"],
    },
    "ppo_continuous.py": {
        "flags": TINY + ["--env-id", "Pendulum-v1", "--num-minibatches", "4", "--update-epochs", "4"],
        "env_id": "Pendulum-v1",
        "lr": 3e-4,
        "truncating": [],
    },  # Pendulum: 200-step limit
    # Breakout's time limit is out of reach: the ALE max-frames truncation is tested via the GAE tests
    "ppo_atari.py": {"flags": TINY, "env_id": "BreakoutNoFrameskip-v4", "lr": 2.5e-4, "truncating": None},
}
CONTINUOUS = "ppo_continuous.py"
ATARI = "ppo_atari.py"
HOPPER = ["--env-id", "Hopper-v5"]  # a MuJoCo env whose random-policy episodes end within the budget


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """baseline(script, *extra) -> the cached run of the script's defaults on its tiny budget."""
    cache = {}

    def get(script, *extra):
        if (script, extra) not in cache:
            cache[script, extra] = train_in(
                tmp_path_factory.mktemp("baseline"), script, *SCRIPTS[script]["flags"], *extra
            )
        return cache[script, extra]

    return get


def tiny(train, script, *flags, **kwargs):
    return train(script, *SCRIPTS[script]["flags"], *flags, **kwargs)


@pytest.mark.parametrize("script", SCRIPTS)
def test_defaults_anneal_the_learning_rate_and_keep_the_clip(baseline, script):
    run = baseline(script)
    lr = run.scalars("charts/learning_rate")
    np.testing.assert_allclose(lr, SCRIPTS[script]["lr"] * (1 - np.arange(ITERATIONS) / ITERATIONS), rtol=1e-6)
    clip = 0.1 if script == ATARI else 0.2
    assert run.scalars("charts/clip_coef") == pytest.approx([clip] * ITERATIONS)
    assert run.scalars("charts/minibatch_steps") == [16] * ITERATIONS  # 4 epochs x 4 minibatches
    for tag in LOSSES + ["losses/old_approx_kl", "losses/clipfrac", "losses/explained_variance", "charts/SPS"]:
        values = run.scalars(tag)
        assert len(values) == ITERATIONS and np.all(np.isfinite(values)), tag
    # where the time went: each part takes time, and together they take about what the run took
    rollout, update, sps = (
        np.array(run.scalars(tag)) for tag in ["time/rollout_seconds", "time/update_seconds", "charts/SPS"]
    )
    assert np.all(rollout > 0) and np.all(update > 0)
    steps = np.array(run.steps("charts/SPS"))
    assert 0.5 < (rollout + update).sum() / (steps[-1] / sps[-1]) <= 1.0 + 1e-6
    assert len(run.scalars("charts/episodic_return")) >= (1 if script == ATARI else 4)  # Atari: whole games


COMMON_FLAGS = [
    ["--no-ortho-init"],
    ["--adam-eps", "1e-3"],
    ["--no-gae"],
    ["--gamma", "0.9", "--gae-lambda", "0.8"],
    ["--no-norm-adv"],
    ["--no-clip-vloss"],
    ["--ent-coef", "0.05", "--vf-coef", "1", "--max-grad-norm", "5"],
    ["--shared-network"],
    ["--no-bootstrap-truncation"],
    ["--seed", "2"],
]
CONTINUOUS_FLAGS = [
    ["--no-norm-obs"],
    ["--clip-obs", "1"],
    ["--no-norm-reward"],
    ["--clip-reward", "0.1"],
    ["--state-dependent-std"],
    ["--norm-obs-final"],
    ["--norm-reward-restart", "termination"],
]
CHANGING = (
    [
        (script, [], flags)
        for script in SCRIPTS
        for flags in COMMON_FLAGS
        if not (flags == ["--no-bootstrap-truncation"] and SCRIPTS[script]["truncating"] is None)
        and not (flags == ["--shared-network"] and script == ATARI)
    ]  # Atari's default; see ATARI_FLAGS
    + [(CONTINUOUS, [], flags) for flags in CONTINUOUS_FLAGS]
    # Hopper's 1000-step time limit is out of the tiny budget's reach: truncation is tested on Pendulum
    + [
        (CONTINUOUS, HOPPER, flags)
        for flags in COMMON_FLAGS + CONTINUOUS_FLAGS
        if flags != ["--no-bootstrap-truncation"]
    ]
)


@pytest.mark.parametrize("script, env, flags", CHANGING, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_flag_changes_training(train, baseline, script, env, flags):
    if flags == ["--no-bootstrap-truncation"]:
        env = SCRIPTS[script]["truncating"]
    run = tiny(train, script, *env, *flags)
    values = run.scalars("losses/value_loss")
    assert len(values) == ITERATIONS and np.all(np.isfinite(values))
    # same seed and budget: any difference in the losses means the flag reached the computation
    assert values != baseline(script, *env).scalars("losses/value_loss")


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flags", [["--vector-mode", "async"], ["--no-torch-deterministic", "--no-cuda"]], ids=" ".join)
def test_flag_keeps_results_identical(train, baseline, script, flags):
    # subprocess envs, and the CPU device, must not change a seeded run's numbers
    run = tiny(train, script, *flags)
    for tag in LOSSES + ["charts/episodic_return"]:
        assert run.scalars(tag) == baseline(script).scalars(tag), tag


@pytest.mark.parametrize("script", SCRIPTS)
def test_compile_trains_on_policy(train, script):
    # torch.compile of get_action_and_value, which the rollout and the loss both call: inductor draws its own random
    # numbers (no private setting makes it use torch's), so the run is not the eager one; it stays on-policy (one
    # minibatch, one epoch: ratios of 1 up to the compiled kernels' rounding) and logs finite statistics
    run = tiny(train, script, "--compile", "--update-epochs", "1", "--num-minibatches", "1")
    assert max(abs(kl) for kl in run.scalars("losses/old_approx_kl")) < 1e-5
    for tag in LOSSES:
        assert len(run.scalars(tag)) == ITERATIONS and np.all(np.isfinite(run.scalars(tag))), tag


@pytest.mark.parametrize("script", SCRIPTS)
def test_constant_learning_rate(train, script):
    run = tiny(train, script, "--no-anneal-lr", "--learning-rate", "1e-3")
    assert run.scalars("charts/learning_rate") == pytest.approx([1e-3] * ITERATIONS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_anneal_clip(train, baseline, script):
    clip = 0.1 if script == ATARI else 0.2  # the default
    run = tiny(train, script, "--anneal-clip")
    np.testing.assert_allclose(
        run.scalars("charts/clip_coef"), clip * (1 - np.arange(ITERATIONS) / ITERATIONS), rtol=1e-6
    )
    # the loss clips at the annealed value: the first iteration (not annealed yet) is the baseline's, later ones not
    values, unannealed = run.scalars("losses/value_loss"), baseline(script).scalars("losses/value_loss")
    assert values[0] == unannealed[0] and values[1:] != unannealed[1:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_minibatches_and_epochs(train, script):
    run = tiny(train, script, "--num-minibatches", "2", "--update-epochs", "3")
    assert run.scalars("charts/minibatch_steps") == [6] * ITERATIONS


@pytest.mark.parametrize("script", SCRIPTS)
def test_target_kl_stops_after_the_epoch(train, script):
    # CleanRL: the KL of an epoch's last minibatch is checked when the epoch ends (a constant
    # learning rate keeps the KL of late iterations above the target)
    run = tiny(train, script, "--target-kl", "1e-10", "--kl-stop", "epoch", "--no-anneal-lr")
    assert run.scalars("charts/minibatch_steps") == [4] * ITERATIONS


@pytest.mark.parametrize("script", SCRIPTS)
def test_target_kl_stops_before_a_minibatch_step(train, script):
    # SB3: the first minibatch sees KL 0 and steps; the second sees KL > 1.5 x target and stops
    run = tiny(train, script, "--target-kl", "1e-10", "--kl-stop", "minibatch", "--no-anneal-lr")
    assert run.scalars("charts/minibatch_steps") == [1] * ITERATIONS


@pytest.mark.parametrize("script", SCRIPTS)
def test_kl_penalty_adapts_beta(train, script):
    run = tiny(train, script, "--loss", "kl-penalty", "--kl-coef", "0.5", "--kl-target", "0.001")
    betas, kls = run.scalars("charts/kl_coef"), run.scalars("losses/kl_after_update")
    assert len(betas) == len(kls) == ITERATIONS and betas[0] == 0.5
    for i in range(ITERATIONS - 1):
        assert betas[i + 1] == pytest.approx(adapt_kl_coef(betas[i], kls[i], 0.001))
    assert len(set(betas)) > 1, "beta never adapted"


@pytest.mark.parametrize("script", SCRIPTS)
def test_exp_name_and_seed_name_the_run(train, script):
    run = tiny(train, script, "--exp-name", "my_exp", "--seed", "7")
    assert f"{SCRIPTS[script]['env_id']}__my_exp__7__" in run.run_dir


@pytest.mark.parametrize("script", SCRIPTS)
def test_track_logs_to_wandb_offline(train, script):
    run = tiny(train, script, "--track", "--wandb-project-name", "ppo37-test", env={"WANDB_MODE": "offline"})
    (wandb_run,) = glob.glob(str(run.cwd / "wandb" / "offline-run-*"))
    (record,) = glob.glob(f"{wandb_run}/run-*.wandb")
    assert SCRIPTS[script]["env_id"].encode() in open(record, "rb").read(), "the run's Args are not in the W&B record"
    # sync_tensorboard: the TensorBoard events are mirrored into the W&B run
    assert glob.glob(f"{wandb_run}/files/runs/*/events.out.tfevents.*")


def test_clip_action_sends_clipped_actions_and_trains_on_the_unclipped_ones(train):
    # UnclippedBox pays -sum(a^2) without clipping itself: every step pays >= -0.02 iff its action was
    # clipped to [-0.1, 0.1]; one update of one minibatch scores the stored actions with the unchanged
    # policy, so its KL is 0 only if the stored actions are the very samples (not their clipped copies)
    flags = ["--env-id", "tests.envs:UnclippedBox-v0", "--num-minibatches", "1", "--update-epochs", "1"]
    clipped = tiny(train, CONTINUOUS, *flags)
    lengths = clipped.scalars("charts/episodic_length")
    assert lengths and all(
        ret >= -0.02 * n - 1e-6 for ret, n in zip(clipped.scalars("charts/episodic_return"), lengths)
    )
    assert max(abs(kl) for kl in clipped.scalars("losses/approx_kl")) < 1e-6
    assert max(clipped.scalars("losses/clipfrac")) == 0
    unclipped = tiny(train, CONTINUOUS, *flags, "--no-clip-action")
    assert min(unclipped.scalars("charts/episodic_return")) < -0.02 * 16 * 10


def test_save_model_and_evaluate(train):
    run = tiny(train, CONTINUOUS, "--save-model", "--eval-episodes", "3")
    (model_path,) = glob.glob(f"{run.run_dir}/ppo_continuous.pt")
    logged = run.scalars("eval/episodic_return")
    assert len(logged) == 3
    # evaluating the saved file again (same seed as the script's) reproduces the logged returns
    np.testing.assert_allclose(evaluate(model_path, 3, seed=1 + 10_000), logged, rtol=1e-5)
    # sampled actions, as in training: seeded by `seed`, without touching the caller's torch RNG
    rng_state = torch.get_rng_state()
    sampled = evaluate(model_path, 3, seed=5, deterministic=False)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert sampled == evaluate(model_path, 3, seed=5, deterministic=False)
    assert sampled != evaluate(model_path, 3, seed=5)


# Each Atari detail on the game where it matters (Pong has no lives; Breakout's rewards are all 1
# early on, so clipping is checked on Pong's -1s), with both back ends
ATARI_FLAGS = [
    (["--noop-max", "5"], "PongNoFrameskip-v4"),
    (["--frame-skip", "2"], "PongNoFrameskip-v4"),
    (["--no-episodic-life"], "BreakoutNoFrameskip-v4"),
    (["--no-fire-reset"], "BreakoutNoFrameskip-v4"),
    (["--frame-size", "64"], "PongNoFrameskip-v4"),
    (["--frame-stack", "2"], "BreakoutNoFrameskip-v4"),
    (["--no-shared-network"], "PongNoFrameskip-v4"),
    (["--no-scale-obs"], "BreakoutNoFrameskip-v4"),
]


@pytest.mark.parametrize("backend", ["gymnasium", "ale"])
@pytest.mark.parametrize("flags, env_id", ATARI_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_atari_flag_changes_training(train, baseline, backend, flags, env_id):
    env = ("--env-id", env_id, "--env-backend", backend, *ONE_STEP)
    run = tiny(train, ATARI, *env, *flags)
    values = run.scalars("losses/value_loss")
    assert len(values) == ITERATIONS and np.all(np.isfinite(values))
    assert values != baseline(ATARI, *env).scalars("losses/value_loss")


@pytest.mark.parametrize("backend, flags", [("gymnasium", []), ("ale", []), ("ale", ["--clip-reward", "0"])])
def test_atari_logs_unclipped_full_game_scores(train, backend, flags):
    # Pong: a random policy loses whole games at about -21; per-life or clipped accounting could not
    # produce scores this low with episodes this long
    run = tiny(
        train,
        ATARI,
        "--env-id",
        "PongNoFrameskip-v4",
        "--env-backend",
        backend,
        "--num-steps",
        "512",
        "--total-timesteps",
        "2048",
        *ONE_STEP,
        *flags,
    )
    scores = run.scalars("charts/episodic_return")
    assert scores and all(-21 <= score <= -15 for score in scores), scores
    assert all(length > 500 for length in run.scalars("charts/episodic_length"))
    assert np.all(np.isfinite(run.scalars("losses/value_loss")))


def test_atari_ram_observations_train_in_ppo_discrete(tmp_path):
    """ALE ids work in ppo_discrete.py (ale-py registers its games on import): the console's RAM, 128 bytes, is
    the observation."""
    run = train_in(tmp_path, "ppo_discrete.py", "--env-id", "ALE/Pong-ram-v5", *TINY)
    assert len(run.scalars("losses/value_loss")) == 8


@pytest.mark.parametrize("scale_obs", [True, False])
def test_ram_bytes_reach_the_network_scaled_to_0_1(scale_obs):
    # ours: RAM bytes (0-255) divided by 255, which keeps the first tanh layer out of saturation; off: raw bytes
    envs = make_envs(DiscreteArgs(env_id="ALE/Breakout-ram-v5", num_envs=2, scale_obs=scale_obs))
    obs, _ = envs.reset(seed=0)
    for _ in range(20):
        obs, *_ = envs.step(envs.action_space.sample())
    envs.close()
    assert obs.shape == (2, 128) and obs.min() >= 0
    assert (obs.dtype == np.float32 and 0.5 < obs.max() <= 1.0) if scale_obs else obs.max() > 100
    # bytes of another range (flags in Box(0, 1)) stay as they are
    envs = make_envs(DiscreteArgs(env_id="tests.envs:BinaryBytes-v0", num_envs=2, scale_obs=scale_obs))
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert sorted(obs.reshape(-1).tolist()) == [0, 0, 0, 0, 1, 1]
