"""ppo_continuous.py's parts: running statistics, reward scaling, the Gaussian policy, action
clipping, and saving a model with its statistics."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from ppo_continuous import (
    CHECKPOINT_FORMAT,
    Agent,
    Args,
    Normalization,
    RewardScaler,
    RunningMeanStd,
    box_features,
    env_actions,
    gaussian_logprob_and_entropy,
    load_model,
    normalize_obs,
)


def test_running_statistics_match_numpy_over_batches_of_different_sizes():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 5)) for n in (1, 7, 64, 3, 200)]
    rms = RunningMeanStd((5,))
    for batch in batches:
        rms.update(batch)
    everything = np.concatenate(batches)
    # the prior count of 1e-4 (mean 0, var 1) shifts the result by about 1e-4 / 275
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-5)
    assert rms.count == pytest.approx(len(everything) + 1e-4)


def test_merged_statistics_equal_those_of_the_concatenated_data():
    rng = np.random.default_rng(1)
    first, second = rng.normal(-1, 1, size=(50, 3)), rng.normal(4, 3, size=(120, 3))
    a, b, together = RunningMeanStd((3,)), RunningMeanStd((3,)), RunningMeanStd((3,))
    a.update(first)
    b.update(second)
    together.update(np.concatenate([first, second]))
    a.update_from_moments(b.mean, b.var, b.count)
    np.testing.assert_allclose(a.mean, together.mean, rtol=1e-6)
    np.testing.assert_allclose(a.var, together.var, rtol=1e-6)


def test_normalize_obs_clips_and_is_identity_without_statistics():
    rms = RunningMeanStd((2,))
    rms.update(np.array([[0.0, 10.0], [2.0, 30.0]]))  # mean ~ (1, 20), std ~ (1, 10)
    normalized = normalize_obs(np.array([[1.0, 20.0], [1000.0, -1000.0]]), rms, clip_obs=5.0)
    np.testing.assert_allclose(normalized[0], [0.0, 0.0], atol=1e-3)
    np.testing.assert_array_equal(normalized[1], [5.0, -5.0])
    raw = np.array([[123.0, -4.0]])
    assert normalize_obs(raw, None, 5.0) is raw


def test_box_features_are_the_flattened_positions_of_box_parts():
    space = gym.spaces.Dict(
        {"a": gym.spaces.Discrete(3), "b": gym.spaces.Box(-1, 1, (2, 2)), "c": gym.spaces.MultiBinary(2)}
    )
    expected = [False] * 3 + [True] * 4 + [False] * 2
    np.testing.assert_array_equal(box_features(space), expected)
    nested = gym.spaces.Tuple([gym.spaces.Box(0, 1, (1,)), gym.spaces.MultiDiscrete([2, 3]), space])
    np.testing.assert_array_equal(box_features(nested), [True] + [False] * 5 + expected)
    # the positions are those gymnasium flattens to: the Box parts hold the sample's Box values
    sample = nested.sample()
    flat = gym.spaces.flatten(nested, sample)
    box_values = np.concatenate([sample[0], sample[2]["b"].reshape(-1)])
    np.testing.assert_array_equal(flat[box_features(nested)], box_values)


def test_norm_obs_leaves_one_hot_features_as_they_are():
    # DictBoxTarget-v0 flattens to [2 noise numbers (a Box), one-hot of the target (Discrete(3))]; target 2 is rare
    norm = Normalization(Args(env_id="tests.envs:DictBoxTarget-v0", norm_reward=False), obs_dim=5)
    rng = np.random.default_rng(0)
    raw = np.zeros((1000, 5))
    raw[:, :2] = rng.normal(5.0, 3.0, size=(1000, 2))
    raw[np.arange(1000), 2 + np.where(np.arange(1000) == 7, 2, rng.integers(2, size=1000))] = 1.0
    obs = norm.observe(raw, update=True, device=torch.device("cpu")).numpy()
    np.testing.assert_array_equal(obs[:, 2:], raw[:, 2:])  # a rare category reads 1, not the clip (+10)
    assert np.abs(obs[:, :2].mean(0)).max() < 0.01 and np.abs(obs[:, :2].std(0) - 1).max() < 0.01
    np.testing.assert_array_equal(norm.obs_rms.mean[2:], 0.0)  # what a checkpoint saves, and evaluation uses
    np.testing.assert_array_equal(norm.obs_rms.var[2:], 1.0)


@pytest.mark.parametrize("restart", ["episode-end", "termination"])
def test_reward_scaling_against_a_naive_reference_with_episode_ends(restart):
    rng = np.random.default_rng(2)
    num_envs, num_steps, gamma = 3, 200, 0.9
    rewards = rng.normal(1.0, 2.0, size=(num_steps, num_envs))
    terminated, truncated = rng.random((num_steps, num_envs)) < 0.05, rng.random((num_steps, num_envs)) < 0.05
    scaler = RewardScaler(num_envs, gamma, clip_reward=0.0, restart=restart)
    scaled = np.stack([scaler(rewards[t], terminated[t], truncated[t]) for t in range(num_steps)])

    # naive: each env's discounted return restarts after its episode ends (ours), or, as CleanRL's gymnasium
    # 0.29 wrapper, is zeroed before a terminal step's reward is added and runs on across time limits;
    # the scale at step t is the std of every return seen so far (all envs, steps 0..t)
    returns = np.zeros((num_steps, num_envs))
    for i in range(num_envs):
        running = 0.0
        for t in range(num_steps):
            if restart == "termination" and terminated[t, i]:
                running = 0.0
            running = running * gamma + rewards[t, i]
            returns[t, i] = running
            if restart == "episode-end" and (terminated[t, i] or truncated[t, i]):
                running = 0.0
    for t in [5, 50, 199]:
        expected = rewards[t] / np.sqrt(returns[: t + 1].var() + 1e-8)
        np.testing.assert_allclose(scaled[t], expected, rtol=1e-3)


def test_reward_clipping():
    scaler = RewardScaler(2, 0.99, clip_reward=1.0)
    scaler.return_rms.var = np.float64(1e-6)  # a tiny scale makes every reward huge before clipping
    scaler.return_rms.count = 1e9
    np.testing.assert_array_equal(scaler(np.array([5.0, -5.0]), *[np.array([False, False])] * 2), [1.0, -1.0])


def test_gaussian_logprob_and_entropy_match_torch_distributions():
    torch.manual_seed(0)
    mean, logstd = torch.randn(16, 4), torch.randn(16, 4) * 0.5
    action = mean + logstd.exp() * torch.randn(16, 4) * 3
    logprob, entropy = gaussian_logprob_and_entropy(mean, logstd, action)
    normal = Normal(mean, logstd.exp())
    torch.testing.assert_close(logprob, normal.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, normal.entropy().sum(-1))


def test_clipped_actions_are_sent_and_unclipped_ones_kept():
    sample = np.array([[-3.0, 0.5, 2.0]])
    low, high = np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 1.5])
    np.testing.assert_array_equal(env_actions(sample, low, high, clip_action=True), [[-1.0, 0.5, 1.5]])
    np.testing.assert_array_equal(sample, [[-3.0, 0.5, 2.0]])  # the stored sample is left unclipped
    np.testing.assert_array_equal(env_actions(sample, low, high, clip_action=False), sample)


def test_log_std_starts_at_zero_and_can_depend_on_the_state():
    agent = Agent(obs_dim=3, action_dim=2)
    assert torch.all(agent.actor_logstd == 0) and agent.actor_logstd.shape == (1, 2)
    x = torch.randn(5, 3)
    _, _, entropy, _ = agent.get_action_and_value(x)
    torch.testing.assert_close(entropy, torch.full((5,), 2 * (0.5 + 0.5 * np.log(2 * np.pi))))  # std 1
    state_dependent = Agent(obs_dim=3, action_dim=2, state_dependent_std=True)
    _, _, entropy, _ = state_dependent.get_action_and_value(x)
    assert entropy.std() > 0, "entropy should vary with the state"


@pytest.mark.parametrize("shared_network, state_dependent_std", [(False, False), (True, True)])
def test_save_load_round_trip_gives_identical_actions(tmp_path, shared_network, state_dependent_std):
    torch.manual_seed(0)
    agent = Agent(obs_dim=4, action_dim=2, shared_network=shared_network, state_dependent_std=state_dependent_std)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # not the init: a trained-looking model
    rms = RunningMeanStd((4,))
    rms.update(np.random.default_rng(0).normal(5, 3, size=(100, 4)))
    args = Args(env_id="Pendulum-v1", shared_network=shared_network, state_dependent_std=state_dependent_std)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model": agent.state_dict(),
        "obs_rms": rms.state_dict(),
        "args": vars(args),
        "run_name": "test",
        "iteration": 1,
        "global_step": 1,
        "kl_coef": 1.0,
        "optimizer": {},
        "rng": [{}],
        "wandb_id": None,
        "reward_rms": None,
    }
    torch.save(checkpoint, str(tmp_path / "model.pt"))

    loaded, loaded_rms, saved_args = load_model(str(tmp_path / "model.pt"))
    assert saved_args["env_id"] == "Pendulum-v1"
    np.testing.assert_array_equal(loaded_rms.mean, rms.mean)
    np.testing.assert_array_equal(loaded_rms.var, rms.var)
    raw_obs = np.random.default_rng(1).normal(5, 3, size=(32, 4))
    x = torch.as_tensor(normalize_obs(raw_obs, rms, 10.0), dtype=torch.float32)
    x_loaded = torch.as_tensor(normalize_obs(raw_obs, loaded_rms, 10.0), dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(agent.get_mean_action(x), loaded.get_mean_action(x_loaded))
        torch.manual_seed(3)
        sampled = agent.get_action_and_value(x)
        torch.manual_seed(3)
        sampled_loaded = loaded.get_action_and_value(x_loaded)
    for original, reloaded in zip(sampled, sampled_loaded):
        assert torch.equal(original, reloaded)


def test_a_video_renders_with_the_users_mujoco_gl(monkeypatch):
    import os

    from ppo_continuous import make_gym_env

    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice stays
    make_gym_env(Args(env_id="Pendulum-v1"), render_mode="rgb_array").close()
    assert os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")  # none chosen: EGL, which needs no display
    make_gym_env(Args(env_id="Pendulum-v1"), render_mode="rgb_array").close()
    assert os.environ["MUJOCO_GL"] == "egl"
