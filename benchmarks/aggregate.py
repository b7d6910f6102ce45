"""One number per script across its environments, as rliable (Agarwal et al., 2021) reports them: each run's score
(the mean return of its last 100 training episodes, from the summary.csv of benchmarks/run.py) normalised to
(score - random) / (reference - random) for its env, the interquartile mean (IQM) of all runs of a group, and a 95%
confidence interval from a stratified bootstrap (seeds resampled within each env).

    cd benchmarks/results && python ../aggregate.py --out aggregate --groups \\
        "ppo_continuous.py (MuJoCo)=ppo_continuous_HalfCheetah,ppo_continuous_Hopper,ppo_continuous_Walker2d" \\
        "ppo_discrete.py=ppo_discrete,ppo_discrete_lunarlander"

writes <out>/aggregate.md (the table) and <out>/aggregate.png (IQM and interval per group).

Normalisation: MuJoCo uses D4RL's random and expert scores (Fu et al., 2020), the standard MuJoCo normalisation;
Atari the random and human scores of Mnih et al. (2015); the other envs gymnasium's own reward_threshold ("solved")
as the reference and a uniformly random policy's mean return as random, measured with
`python benchmarks/aggregate.py --measure-random CartPole-v1 ...` (100 episodes, seeds 0-99).
"""

import csv
import os
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import tyro

# env id -> (random, reference)
SCORES = {
    "HalfCheetah-v5": (-280.178953, 12135.0),  # D4RL
    "Hopper-v5": (-20.272305, 3234.3),
    "Walker2d-v5": (1.629008, 4592.3),
    "PongNoFrameskip-v4": (-20.7, 14.6),  # Mnih et al. (2015): random, human
    "CartPole-v1": (23.68, 475.0),  # random: measured (--measure-random); reference: gymnasium's reward_threshold
    "Acrobot-v1": (-497.08, -100.0),
    "LunarLander-v3": (-191.96, 200.0),
    "BipedalWalker-v3": (-102.82, 300.0),
}


@dataclass
class Args:
    groups: list[str] = field(default_factory=list)
    """NAME=FOLDER,FOLDER,...: the benchmarks/run.py output folders whose runs form one group"""
    out: str = "benchmarks/results/aggregate"
    """output folder (aggregate.md, aggregate.png)"""
    bootstrap: int = 2000
    """bootstrap resamples for the confidence interval"""
    seed: int = 0
    """seed of the bootstrap"""
    measure_random: list[str] = field(default_factory=list)
    """only print a uniformly random policy's mean return on these env ids (100 episodes)"""


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of the scores (a quarter cut from each end)."""
    scores = np.sort(scores)
    cut = len(scores) // 4
    return float(scores[cut : len(scores) - cut].mean())


def stratified_bootstrap(by_env: dict, resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of the IQM when each env's runs are resampled with replacement, env by env."""
    values = [
        iqm(np.concatenate([rng.choice(scores, len(scores)) for scores in by_env.values()])) for _ in range(resamples)
    ]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def normalised_scores(folders: list[str]) -> dict:
    """env id -> the normalised scores of its runs in these benchmarks/run.py output folders."""
    by_env = {}
    for folder in folders:
        with open(os.path.join(folder, "summary.csv")) as f:
            for row in csv.DictReader(f):
                if row["env_id"] not in SCORES:
                    raise SystemExit(f"{folder}: no random and reference score for {row['env_id']} in SCORES")
                random_score, reference = SCORES[row["env_id"]]
                normalised = (float(row["last100"]) - random_score) / (reference - random_score)
                by_env.setdefault(row["env_id"], []).append(normalised)
    return {env_id: np.array(scores) for env_id, scores in by_env.items()}


def random_return(env_id: str, episodes: int = 100) -> float:
    env = gym.make(env_id)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def main(args: Args) -> None:
    if args.measure_random:
        for env_id in args.measure_random:
            print(f"{env_id}: {random_return(env_id):.2f}")
        return
    rng, rows = np.random.default_rng(args.seed), []
    for group in args.groups:
        name, _, folders = group.partition("=")
        by_env = normalised_scores(folders.split(","))
        low, high = stratified_bootstrap(by_env, args.bootstrap, rng)
        runs = sum(len(scores) for scores in by_env.values())
        rows.append((name, iqm(np.concatenate(list(by_env.values()))), low, high, ", ".join(by_env), runs))
    os.makedirs(args.out, exist_ok=True)
    table = ["| group | IQM of normalised scores | 95% CI | envs | runs |", "|---|---|---|---|---|"]
    table += [
        f"| {name} | {value:.3f} | [{low:.3f}, {high:.3f}] | {envs} | {runs} |"
        for name, value, low, high, envs, runs in rows
    ]
    with open(os.path.join(args.out, "aggregate.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.5 * len(rows)))
    for y, (_, value, low, high, _, _) in enumerate(rows):
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", capsize=4)
    ax.set_yticks(range(len(rows)), [row[0] for row in rows])
    ax.set_xlabel("IQM of normalised scores (0: random, 1: reference), 95% CI")
    ax.axvline(1.0, color="gray", linestyle=":")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "aggregate.png"), dpi=120)


if __name__ == "__main__":
    main(tyro.cli(Args))
