"""Small deterministic environments for the tests; `--env-id tests.envs:<Id>` registers them."""

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.registration import register

COUNTING_LENGTHS = (3, 8, 5)
"""CountingEnv's episode lengths, cycled; the 8-step episodes hit the time limit first."""
COUNTING_TIME_LIMIT = 6


class CountingEnv(gym.Env):
    """Ignores actions. The k-th episode lasts COUNTING_LENGTHS[(offset + k) % 3] steps and step t of
    an episode (1-based) pays reward t, so its true return is L (L + 1) / 2; reset(seed=s) sets
    offset = s % 3 so sub-envs seeded s, s+1, ... run different sequences."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.episode = -1
        self.offset = 0
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.offset, self.episode = seed % len(COUNTING_LENGTHS), -1
        self.episode += 1
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        length = COUNTING_LENGTHS[(self.offset + self.episode) % len(COUNTING_LENGTHS)]
        return np.array([self.t], np.float32), float(self.t), self.t >= length, False, {}


def counting_episodes(seed: int, num_envs: int, num_vector_steps: int):
    """The true (vector step, env index, return, length) of every episode CountingEnv ends."""
    episodes = []
    for i in range(num_envs):
        offset, episode, t = (seed + i) % len(COUNTING_LENGTHS), 0, 0
        for vector_step in range(1, num_vector_steps + 1):
            t += 1
            length = min(COUNTING_LENGTHS[(offset + episode) % len(COUNTING_LENGTHS)], COUNTING_TIME_LIMIT)
            if t == length:
                episodes.append((vector_step, i, t * (t + 1) / 2, t))
                episode, t = episode + 1, 0
    return sorted(episodes)


class MultiDiscreteTargetEnv(gym.Env):
    """A contextual bandit over MultiDiscrete([3, 4]): the observation one-hot encodes a target per
    component, and each step pays 0.5 per component that hits its target. Episodes last 8 steps:
    a random policy earns about 2.3 per episode, a perfect one 8."""

    nvec = (3, 4)
    observation_space = gym.spaces.Box(0.0, 1.0, (sum(nvec),), np.float32)
    action_space = gym.spaces.MultiDiscrete(nvec)

    def _observe(self):
        self.target = self.np_random.integers(0, self.nvec)
        obs = np.zeros(sum(self.nvec), np.float32)
        obs[self.target + np.array([0, self.nvec[0]])] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe(), {}

    def step(self, action):
        self.t += 1
        reward = 0.5 * float(np.sum(np.asarray(action) == self.target))
        return self._observe(), reward, self.t >= 8, False, {}


class MaskedTargetEnv(gym.Env):
    """Discrete(6) with an action mask in info: the target and two other actions are allowed.
    Hitting the one-hot-observed target pays 1, another allowed action 0; a masked action raises,
    so any sampling of a masked action fails the run. Episodes last 8 steps."""

    n = 6
    observation_space = gym.spaces.Box(0.0, 1.0, (n,), np.float32)
    action_space = gym.spaces.Discrete(n)

    def _observe(self):
        self.target = int(self.np_random.integers(self.n))
        others = self.np_random.choice([a for a in range(self.n) if a != self.target], 2, replace=False)
        self.mask = np.zeros(self.n, bool)
        self.mask[[self.target, *others]] = True
        obs = np.zeros(self.n, np.float32)
        obs[self.target] = 1.0
        return obs, {"action_mask": self.mask.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._observe()

    def step(self, action):
        if not self.mask[action]:
            raise RuntimeError(f"masked action {action} was taken (mask {self.mask})")
        self.t += 1
        reward = float(action == self.target)
        obs, info = self._observe()
        return obs, reward, self.t >= 8, False, info


class UnclippedBoxEnv(gym.Env):
    """Box actions bounded to [-0.1, 0.1] that the env itself does NOT clip: each step pays
    -sum(action^2), so a step's reward is >= -0.02 exactly when the action was in bounds. With a
    std-1 Gaussian policy almost every sample lies outside. Episodes last 16 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        reward = -float(np.sum(np.square(action)))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), reward, self.t >= 16, False, {}


class UnboundedBoxEnv(UnclippedBoxEnv):
    """The same task with an action space that has no bounds to clip to."""

    action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class CartPoleNoVelocityEnv(CartPoleEnv):
    """CartPole that shows only the cart position and the pole angle: the velocities must be
    inferred from successive observations, so a policy needs memory to balance well."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        low, high = self.observation_space.low[[0, 2]], self.observation_space.high[[0, 2]]
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[[0, 2]], info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[[0, 2]], reward, terminated, truncated, info


class NanRewardEnv(CountingEnv):
    """CountingEnv whose 4th step of every episode pays NaN, as a broken simulator might."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, float("nan") if self.t == 4 else reward, terminated, truncated, info


class FakeAle:
    def __init__(self, env):
        self.env = env

    def lives(self):
        return self.env.lives


class FakeAleEnv(gym.Env):
    """A scripted stand-in for ale-py's AtariEnv (frameskip 1). Frame f (counted from the game's
    reset) is an RGB image with pixel (0, 0) = f % 256 and pixel (0, 1) = 255 - f % 256, the rest
    GRAY; it pays FAKE_REWARDS[f % 5]; a life is lost every LIFE_FRAMES frames, and the game is
    over when the 3 lives are gone. Every action and reset is recorded."""

    LIFE_FRAMES = 20
    FAKE_REWARDS = (0.0, 7.0, 0.0, -2.0, 1.0)
    GRAY = 90
    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self):
        self.ale = FakeAle(self)
        self.actions, self.resets = [], 0

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def _frame(self):
        frame = np.full((210, 160, 3), self.GRAY, np.uint8)
        frame[0, 0], frame[0, 1] = self.frame % 256, 255 - self.frame % 256
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self.frame, self.lives = 0, 3
        return self._frame(), {"lives": self.lives}

    def step(self, action):
        self.actions.append(int(action))
        self.frame += 1
        if self.frame % self.LIFE_FRAMES == 0:
            self.lives -= 1
        reward = self.FAKE_REWARDS[self.frame % len(self.FAKE_REWARDS)]
        return self._frame(), reward, self.lives == 0, False, {"lives": self.lives}


class CountingBoxEnv(CountingEnv):
    """CountingEnv with a Box action (ignored), for ppo_continuous.py: a time-limited episode's final
    observation is [COUNTING_TIME_LIMIT], a value no other observation takes."""

    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


class MatrixBoxEnv(gym.Env):
    """Observations of shape (2, 3) and actions of shape (2, 2): each step pays -sum((a - 0.5)^2) and
    raises if the action does not arrive in the env's own shape. Episodes last 8 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2, 3), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, (2, 3)).astype(np.float32), {}

    def step(self, action):
        if np.shape(action) != (2, 2):
            raise RuntimeError(f"MatrixBoxEnv: an action of shape {np.shape(action)} instead of (2, 2)")
        self.t += 1
        reward = -float(np.sum(np.square(np.asarray(action) - 0.5)))
        return self.np_random.uniform(-1, 1, (2, 3)).astype(np.float32), reward, self.t >= 8, False, {}


class AlignedEnv(gym.Env):
    """Episodes of exactly ALIGNED_LENGTH steps, the same whatever the seed: observation [t / L, 1], reward 1
    when the action matches t's parity. With --num-steps a multiple of L every episode ends at an iteration's
    end, so a run resumed from a checkpoint sees exactly what the uninterrupted run saw."""

    observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def _obs(self):
        return np.array([self.t / ALIGNED_LENGTH, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(np.asarray(action).reshape(-1)[0] > 0) == self.t % 2)
        self.t += 1
        return self._obs(), reward, self.t >= ALIGNED_LENGTH, False, {}


class AlignedBoxEnv(AlignedEnv):
    """AlignedEnv with a Box action: reward 1 when the action's sign matches t's parity."""

    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


ALIGNED_LENGTH = 8


class DiscreteTargetEnv(gym.Env):
    """A contextual bandit with Discrete observations: the observation is a target in Discrete(4), each step
    pays 1 when the action hits it. Episodes last 8 steps: a random policy earns 2, a perfect one 8."""

    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.target = 0, int(self.np_random.integers(4))
        return self.target, {}

    def step(self, action):
        self.t += 1
        reward = float(int(action) == self.target)
        self.target = int(self.np_random.integers(4))
        return self.target, reward, self.t >= 8, False, {}


class DictTargetEnv(DiscreteTargetEnv):
    """The same bandit with Dict observations: the target among 3 and two numbers of noise."""

    observation_space = gym.spaces.Dict(
        {"target": gym.spaces.Discrete(3), "noise": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)}
    )
    action_space = gym.spaces.Discrete(3)

    def _observe(self):
        return {"target": self.target, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(3))
        return self._observe(), {}

    def step(self, action):
        self.t += 1
        reward = float(int(action) == self.target)
        self.target = int(self.np_random.integers(3))
        return self._observe(), reward, self.t >= 8, False, {}


class DictBoxTargetEnv(DictTargetEnv):
    """Dict observations, a Box action: each step pays 1 - |action - goal|, the goal -0.6, 0 or 0.6 as the
    target says. A policy blind to the target earns at most 4.8 per 8-step episode (always 0), a perfect one 8."""

    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def step(self, action):
        self.t += 1
        reward = 1.0 - abs(float(np.asarray(action).reshape(-1)[0]) - 0.6 * (self.target - 1))
        self.target = int(self.np_random.integers(3))
        return self._observe(), reward, self.t >= 8, False, {}


class SequenceObsEnv(DictBoxTargetEnv):
    """Observations of varying length, which no flattening makes a vector."""

    observation_space = gym.spaces.Sequence(gym.spaces.Discrete(2))


class BinaryBytesEnv(DiscreteTargetEnv):
    """The bandit with its target as three uint8 flags in Box(0, 1): bytes, but not of range 0-255."""

    observation_space = gym.spaces.Box(0, 1, (3,), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(3))
        return np.eye(3, dtype=np.uint8)[self.target], {}

    def step(self, action):
        _, reward, terminated, truncated, info = super().step(action)
        self.target %= 3
        return np.eye(3, dtype=np.uint8)[self.target], reward, terminated, truncated, info


register("BinaryBytes-v0", entry_point=BinaryBytesEnv)
register("SequenceObs-v0", entry_point=SequenceObsEnv)
register("DiscreteTarget-v0", entry_point=DiscreteTargetEnv)
register("DictTarget-v0", entry_point=DictTargetEnv)
register("DictBoxTarget-v0", entry_point=DictBoxTargetEnv)
register("CountingEnv-v0", entry_point=CountingEnv, max_episode_steps=COUNTING_TIME_LIMIT)
register("CountingBox-v0", entry_point=CountingBoxEnv, max_episode_steps=COUNTING_TIME_LIMIT)
register("MatrixBox-v0", entry_point=MatrixBoxEnv)
register("Aligned-v0", entry_point=AlignedEnv)
register("AlignedBox-v0", entry_point=AlignedBoxEnv)
register("MultiDiscreteTarget-v0", entry_point=MultiDiscreteTargetEnv)
register("MaskedTarget-v0", entry_point=MaskedTargetEnv)
register("UnclippedBox-v0", entry_point=UnclippedBoxEnv)
register("UnboundedBox-v0", entry_point=UnboundedBoxEnv)
register("NanReward-v0", entry_point=NanRewardEnv)
register("CartPoleNoVelocity-v0", entry_point=CartPoleNoVelocityEnv, max_episode_steps=500)


class CrashOnRank1Env(CountingEnv):
    """CountingEnv that raises after 100 steps in torchrun's worker 1: a worker that dies mid-run."""

    def step(self, action):
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps > 100 and os.environ.get("RANK") == "1":
            raise RuntimeError("CrashOnRank1Env: worker 1 crashes on purpose")
        return super().step(action)


register("CrashOnRank1-v0", entry_point=CrashOnRank1Env, max_episode_steps=COUNTING_TIME_LIMIT)


class BrightOrDarkEnv(gym.Env):
    """An image env outside the ALE, for ppo_atari.py: each 48 x 48 RGB frame is bright or dark at random, and the
    action that names it (1: bright, 0: dark) pays 1. No lives, no FIRE; 16 steps an episode (a time limit): random
    play scores 8, the right action every step 16."""

    metadata = {"render_modes": ["rgb_array"]}
    observation_space = gym.spaces.Box(0, 255, (48, 48, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.bright = int(self.np_random.integers(2))
        return self.render(), {}

    def step(self, action):
        reward, self.bright = float(action == self.bright), int(self.np_random.integers(2))
        return self.render(), reward, False, False, {}

    def render(self):
        return np.full((48, 48, 3), 200 if self.bright else 30, np.uint8)


register("BrightOrDark-v0", entry_point=BrightOrDarkEnv, max_episode_steps=16)


class UnrenderedBrightOrDarkEnv(BrightOrDarkEnv):
    """BrightOrDark without an rgb_array render mode: nothing to record."""

    metadata = {"render_modes": []}


register("UnrenderedBrightOrDark-v0", entry_point=UnrenderedBrightOrDarkEnv, max_episode_steps=16)


class SlowFrames(gym.Wrapper):
    """Another env of this module (`inner`, an id) whose rgb_array frames take `seconds` each, as MuJoCo's do on a
    CPU: what recording costs shows in the time a run takes. A process that renders leaves the file
    rendered-by-rank-<RANK> in the working directory (torchrun's RANK, 0 without it)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    render_mode = "rgb_array"

    def __init__(self, inner: str = "CountingEnv-v0", seconds: float = 0.2, render_mode=None):
        super().__init__(gym.make(inner))
        self.seconds = seconds

    def render(self):
        open(f"rendered-by-rank-{os.environ.get('RANK', '0')}", "w").close()
        time.sleep(self.seconds)
        return np.full((32, 32, 3), 128, np.uint8)


register("SlowFrames-v0", entry_point=SlowFrames)
