"""ppo_atari.py: each baselines wrapper (ours, and gymnasium's for details 15 and 20) against a scripted fake ALE,
the game-score accounting, the CNN, and the two back ends on real games."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppo_atari import (
    Agent,
    Args,
    EpisodicLife,
    FireReset,
    GameScores,
    NoopReset,
    Rollout,
    WarpFrame,
    collect_rollout,
    make_envs,
    wrap_atari,
)
from tests.envs import BrightOrDarkEnv, FakeAleEnv

REWARDS = FakeAleEnv.FAKE_REWARDS


def pixel(obs, index):
    return int(obs[0, index, 0] if obs.ndim == 3 else obs[0, index])


def test_noop_reset_takes_1_to_noop_max_noops():
    counts = set()
    for seed in range(30):
        env = NoopReset(FakeAleEnv(), noop_max=5)
        env.reset(seed=seed)
        assert env.unwrapped.actions == [0] * len(env.unwrapped.actions)
        counts.add(len(env.unwrapped.actions))
    assert counts == {1, 2, 3, 4, 5}


def test_max_and_skip_repeats_sums_and_max_pools():
    env = gym.wrappers.MaxAndSkipObservation(FakeAleEnv(), skip=4)
    env.reset(seed=0)
    obs, reward, terminated, _, _ = env.step(3)
    assert env.unwrapped.actions == [3, 3, 3, 3]
    assert reward == sum(REWARDS[f % 5] for f in range(1, 5))
    # frames 3 and 4 pooled: pixel 0 rises with f (max = 4), pixel 1 falls (max = 255 - 3)
    assert pixel(obs, 0) == 4 and pixel(obs, 1) == 255 - 3 and not terminated


def test_episodic_life_ends_the_episode_not_the_game():
    env = EpisodicLife(FakeAleEnv())
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, _, _ = env.step(2)
        steps += 1
        if terminated:
            break
    assert steps == FakeAleEnv.LIFE_FRAMES and env.unwrapped.lives == 2
    env.reset()  # a lost life: a no-op step, not an emulator reset
    assert env.unwrapped.resets == 1 and env.unwrapped.actions[-1] == 0
    for _ in range(200):  # play to game over: the next reset is a real one
        _, _, terminated, _, _ = env.step(2)
        if terminated and env.unwrapped.lives == 0:
            break
        if terminated:
            env.reset()
    assert env.unwrapped.lives == 0
    env.reset()
    assert env.unwrapped.resets == 2 and env.unwrapped.lives == 3


def test_episodic_life_resets_a_game_its_noop_step_ends():
    class LifePerFrame(FakeAleEnv):
        LIFE_FRAMES = 1

    env = EpisodicLife(LifePerFrame())
    env.reset(seed=0)
    env.unwrapped.lives = 2
    _, _, terminated, _, _ = env.step(2)  # 1 life left: the episode ends, the game goes on
    assert terminated and env.unwrapped.lives == 1
    env.reset()  # its no-op step loses the last life: the game is over, so the emulator resets
    assert env.unwrapped.resets == 2 and env.unwrapped.lives == 3


def test_fire_reset_presses_fire_then_2():
    env = FireReset(FakeAleEnv())
    env.reset(seed=0)
    assert env.unwrapped.actions == [1, 2]


def test_warp_frame_grayscale_and_size():
    obs, _ = WarpFrame(FakeAleEnv(), 84).reset(seed=0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert np.all(obs[1:] == FakeAleEnv.GRAY)  # a uniform gray RGB image stays that gray


def test_frame_stack_order_and_initial_padding():
    env = gym.wrappers.FrameStackObservation(FakeAleEnv(), 4)  # frame f is observed after step f
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 210, 160, 3)
    assert [pixel(frame, 0) for frame in obs] == [0, 0, 0, 0]  # four copies of the first frame
    for _ in range(2):
        obs, *_ = env.step(0)
    assert [pixel(frame, 0) for frame in obs] == [0, 0, 1, 2]  # oldest first


@pytest.mark.parametrize("frame_skip", [4, 1])
def test_full_stack_observation(frame_skip):
    args = Args(noop_max=0, frame_size=84, frame_stack=4, frame_skip=frame_skip, episodic_life=False)
    env = wrap_atari(FakeAleEnv(), args)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert np.all(obs == obs[-1]) and obs.any()  # detail 20: k copies of the first frame (not zeros)
    done = len(env.unwrapped.actions)  # FIRE and 2 after the reset
    obs, reward, *_ = env.step(3)  # detail 15: the action repeated frame_skip times, the rewards summed
    assert env.unwrapped.actions[done:] == [3] * frame_skip and obs.shape == (4, 84, 84)
    assert reward == sum(REWARDS[f % 5] for f in range(done + 1, done + frame_skip + 1))


def wrappers(env: gym.Env) -> list[str]:
    names = []
    while isinstance(env, gym.Wrapper):
        names, env = [*names, type(env).__name__], env.env
    return names


def test_the_ale_only_wrappers_wrap_ale_games_only():
    # no-op starts, episodic life and FIRE use the emulator (its no-op action, lives, FIRE); an image env outside the
    # ALE gets frame skip, gray frames and the stack, whatever those flags say
    args = Args(frame_size=36, frame_stack=2, frame_skip=2)
    assert {"NoopReset", "EpisodicLife", "FireReset"} <= set(wrappers(wrap_atari(FakeAleEnv(), args)))
    env = wrap_atari(BrightOrDarkEnv(), args)
    assert wrappers(env) == ["FrameStackObservation", "WarpFrame", "MaxAndSkipObservation"]
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 36, 36) and obs.dtype == np.uint8 and len(np.unique(obs)) == 1  # the frame, in gray


def test_game_scores_count_games_of_envs_without_lives():
    scores = GameScores(np.zeros(2))  # an env outside the ALE: no info["lives"] ever
    ended = scores.update(np.array([1.0, 2.0]), np.array([False, True]), np.array([True, False]), {})
    assert ended == [(1.0, 1), (2.0, 1)] and scores.update(np.ones(2), *[np.zeros(2, bool)] * 2, {}) == []


class RewardingEnvs:
    """A stub vector env of 2 blank frames that pays 4 every step (as a Breakout brick of a high row does)."""

    num_envs, single_action_space = 2, gym.spaces.Discrete(4)

    def step(self, action):
        ended = np.zeros(2, bool)
        return np.zeros((2, 1, 36, 36), np.uint8), np.full(2, 4.0), ended, ended, {"lives": np.zeros(2, int)}


@pytest.mark.parametrize("clip_reward, trained_on", [(1.0, 1.0), (0.0, 4.0), (2.5, 2.5), (True, 1.0)])
def test_rewards_are_trained_on_as_their_sign_and_scored_raw(clip_reward, trained_on):
    # detail 19: the rollout keeps the reward clipped to [-c, c] (c = 1: the sign of integer game rewards; 0: the
    # reward; True: a checkpoint of the flag's boolean days, read as 1), the game score the raw sum
    args = Args(frame_size=36, frame_stack=1, num_envs=2, num_steps=3, clip_reward=clip_reward)
    rollout, scores = Rollout(args, (1, 36, 36), torch.device("cpu")), GameScores(np.zeros(2))
    rollout.next_obs, rollout.next_start = torch.zeros((2, 1, 36, 36), dtype=torch.uint8), torch.ones(2)
    collect_rollout(RewardingEnvs(), Agent(args, 4), rollout, scores, args, 0, 1)
    assert np.all(rollout.rewards == trained_on) and np.all(scores.scores == 12.0)


@pytest.mark.parametrize("backend", ["gymnasium", "ale"])
def test_fire_reset_launches_the_ball(backend):
    # detail 17: Breakout waits for FIRE: after a reset that presses it, a paddle that never moves loses a life
    # within 200 steps; without it nothing happens
    for fire_reset in [True, False]:
        envs = make_envs(Args(env_id="BreakoutNoFrameskip-v4", env_backend=backend, num_envs=1, fire_reset=fire_reset))
        envs.reset(seed=0)
        lost = any(envs.step(np.zeros(1, dtype=np.int64))[2][0] for _ in range(200))
        envs.close()
        assert lost == fire_reset


def test_game_scores_sum_raw_rewards_across_lives():
    scores = GameScores(np.array([3, 0]))  # env 1 has no lives (like Pong)
    script = [  # raw rewards, terminated, lives after the step
        ([7.0, -1.0], [False, False], [3, 0]),
        ([1.0, 1.0], [True, False], [2, 0]),  # env 0 loses a life: the game goes on
        ([4.0, -1.0], [False, True], [2, 0]),  # env 1's game is over
        ([0.0, 2.0], [True, False], [1, 0]),
        ([2.0, 0.0], [True, False], [3, 0]),  # env 0: game over, the reset restored 3 lives
    ]
    ended = []
    for rewards, terminated, lives in script:
        info = {"lives": np.array(lives)}
        ended += scores.update(np.array(rewards), np.array(terminated), np.array([False, False]), info)
    assert ended == [(-1.0, 3), (14.0, 5)]  # env 1's game, then env 0's  # raw, unclipped, summed over all lives


@pytest.mark.parametrize("frame_size", [84, 64])
def test_cnn_shapes(frame_size):
    agent = Agent(Args(frame_stack=4, frame_size=frame_size), num_actions=6)
    x = torch.randint(0, 256, (3, 4, frame_size, frame_size), dtype=torch.uint8)
    action, logprob, entropy, value, _ = agent.get_action_and_value(x)
    assert action.shape == logprob.shape == entropy.shape == value.shape == (3,)
    assert agent.get_value(x).shape == (3,)
    separate = Agent(Args(frame_stack=4, frame_size=frame_size, shared_network=False), num_actions=6)
    trunk_params = sum(p.numel() for p in agent.actor_trunk.parameters())
    assert sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in agent.parameters()) == trunk_params


def test_scale_obs_scales_inside_the_network():
    x = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    assert Agent(Args(), 4).pixels(x).max() == 1.0
    assert Agent(Args(scale_obs=False), 4).pixels(x).max() == 255.0


def play(env_id, backend, steps, seed=0, **settings):
    """A fixed random action sequence on one env -> observations and the accounting seen."""
    envs = make_envs(Args(env_id=env_id, env_backend=backend, num_envs=1, **settings))
    obs, info = envs.reset(seed=seed)
    scores = GameScores(info["lives"])
    rng = np.random.default_rng(seed)
    observations, terminations, games, rewards = [obs], 0, [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, envs.single_action_space.n, 1))
        observations.append(obs)
        terminations += int(terminated[0])
        rewards.append(float(reward[0]))
        for score, _ in scores.update(reward, terminated, truncated, info):
            games.append((score, terminations, list(rewards)))
            terminations, rewards = 0, []
    envs.close()
    return np.concatenate(observations), games


def test_backends_match_each_other_without_their_reset_differences():
    # with no no-op or FIRE resets (which the back ends order differently) the same actions give the same rewards,
    # and frames that differ only where ale max-pools grayscale frames and the wrappers RGB ones
    (gym_obs, gym_games), (ale_obs, ale_games) = (
        play("PongNoFrameskip-v4", backend, 1100, noop_max=0, fire_reset=False) for backend in ["gymnasium", "ale"]
    )
    assert gym_games == ale_games and gym_games[0][0] < 0  # the first game's score, life losses and rewards
    steps = len(gym_games[0][2])
    difference = np.abs(gym_obs[:steps].astype(int) - ale_obs[:steps])  # [steps]: the next game's first
    # the first stack of a game is padded differently (the first frame repeated, or zeros); from the 4th step on
    # every frame of the stack is a real one
    difference = np.concatenate([difference[:, -1].reshape(-1), difference[3:].reshape(-1)])
    assert difference.max() <= 20 and difference.mean() < 0.1 and np.mean(difference == 0) > 0.99, (
        difference.max(),
        difference.mean(),
    )


@pytest.mark.parametrize("backend", ["gymnasium", "ale"])
def test_backends_agree_on_observations_and_accounting(backend):
    observations, games = play("BreakoutNoFrameskip-v4", backend, 700)
    assert observations.shape == (701, 4, 84, 84) and observations.dtype == np.uint8
    assert 20 < observations[-1].mean() < 80 and observations.max() > 100  # a real Breakout screen
    assert len(games) >= 2
    for score, terminations, rewards in games:
        assert terminations == 5  # episodic life: one training episode per life, 5 lives a game
        assert score == sum(rewards) and score >= 0  # the raw score of the whole game

    observations, games = play("PongNoFrameskip-v4", backend, 1100)
    assert observations.shape == (1101, 4, 84, 84) and observations.dtype == np.uint8
    (score, terminations, rewards), *_ = games
    assert terminations == 1 and rewards.count(-1.0) == 21 and score == sum(rewards)  # one game to 21
