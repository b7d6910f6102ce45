"""What recording a video costs per step on this machine: ms per env.step + env.render() (rgb_array) against
ms per env.step alone, for the env ids given (MuJoCo through EGL unless MUJOCO_GL says otherwise).

    python benchmarks/render_cost.py HalfCheetah-v5 Hopper-v5
"""

import os
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")  # as ppo_continuous.py does when it records

import gymnasium as gym


def ms_per_step(env_id: str, render: bool, steps: int) -> float:
    with gym.make(env_id, render_mode="rgb_array" if render else None) as env:
        env.reset(seed=0)
        env.action_space.seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(env.action_space.sample())
            if render:
                env.render()
        return 1000 * (time.perf_counter() - start) / steps


if __name__ == "__main__":
    for env_id in sys.argv[1:]:
        rendered, plain = ms_per_step(env_id, True, 50), ms_per_step(env_id, False, 500)
        print(f"{env_id} (MUJOCO_GL={os.environ['MUJOCO_GL']}): step + render {rendered:.1f} ms, step {plain:.3f} ms")
