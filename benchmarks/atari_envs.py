"""Environment stepping speed of ppo_atari.py's back ends alone (random actions, no network).

    python benchmarks/atari_envs.py --env-id BreakoutNoFrameskip-v4 --num-envs 8

The back ends are measured in interleaved rounds in one process, so machine noise hits them alike;
the table reports the median steps/s (agent steps, each 4 frames) and the ratio to gymnasium/sync.
"""

import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ppo_atari  # noqa: E402


@dataclass
class Args:
    env_id: str = "BreakoutNoFrameskip-v4"
    """game to step"""
    num_envs: int = 8
    """sub-environments per vector env"""
    steps: int = 2000
    """vector steps timed per round"""
    rounds: int = 3
    """interleaved rounds per back end"""


def steps_per_second(envs, num_envs: int, steps: int, rng: np.random.Generator) -> float:
    actions = rng.integers(0, envs.single_action_space.n, (steps, num_envs))
    started = time.perf_counter()
    for action in actions:
        envs.step(action)
    return steps * num_envs / (time.perf_counter() - started)


def main(args: Args) -> None:
    configs = {
        "gymnasium/sync": ("gymnasium", "sync"),
        "gymnasium/async": ("gymnasium", "async"),
        "ale": ("ale", "sync"),
    }
    envs = {}
    for name, (backend, mode) in configs.items():
        envs[name] = ppo_atari.make_envs(
            ppo_atari.Args(env_id=args.env_id, env_backend=backend, vector_mode=mode, num_envs=args.num_envs)
        )
        envs[name].reset(seed=1)
    rng = np.random.default_rng(0)
    for name in configs:  # warm-up
        steps_per_second(envs[name], args.num_envs, 100, rng)
    results = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name in configs:
            results[name].append(steps_per_second(envs[name], args.num_envs, args.steps, rng))
    for env in envs.values():
        env.close()
    base = np.median(results["gymnasium/sync"])
    print(
        f"{args.env_id}, {args.num_envs} envs, random actions, "
        f"median of {args.rounds} interleaved rounds of {args.steps} steps\n"
    )
    print("| back end | steps/s | vs gymnasium/sync |\n|-|-|-|")
    for name, values in results.items():
        print(f"| {name} | {np.median(values):,.0f} | {np.median(values) / base:.2f}x |")


if __name__ == "__main__":
    main(tyro.cli(Args))
