"""How saturated ppo_discrete.py's first tanh layer is at initialisation on ALE RAM observations, raw or scaled.

    python benchmarks/ram_saturation.py            # ALE/Breakout-ram-v5, 1000 observations of a random policy

Prints, for --no-scale-obs and --scale-obs, the median |pre-activation| of the first layer and the share of its tanh
units past 0.99 (where the gradient is below 2% of its largest).
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ppo_discrete import Agent, Args, make_envs  # noqa: E402

ENV_ID = sys.argv[1] if len(sys.argv) > 1 else "ALE/Breakout-ram-v5"

for scale_obs in (False, True):
    envs = make_envs(Args(env_id=ENV_ID, num_envs=4, scale_obs=scale_obs))
    obs, _ = envs.reset(seed=0)
    envs.action_space.seed(0)
    batch = []
    for _ in range(250):
        obs, *_ = envs.step(envs.action_space.sample())
        batch.append(np.asarray(obs, np.float32))
    envs.close()
    torch.manual_seed(1)
    agent = Agent(int(np.prod(envs.single_observation_space.shape)), [int(envs.single_action_space.n)])
    with torch.no_grad():
        pre = agent.actor_trunk[0](torch.tensor(np.concatenate(batch)))
    saturated = (pre.tanh().abs() > 0.99).float().mean().item()
    print(
        f"{'--scale-obs' if scale_obs else '--no-scale-obs'}: median |pre-activation| {pre.abs().median():.2f}, "
        f"tanh units past 0.99: {saturated:.1%}"
    )
