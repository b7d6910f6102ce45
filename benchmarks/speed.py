"""Steps per second of each script, with where the time goes, side by side in one invocation.

    python benchmarks/speed.py                                   # every script: its defaults and a --num-envs sweep
    python benchmarks/speed.py --no-sweep --workers 1 2          # each script's defaults, 1 vs 2 torchrun workers
    bash benchmarks/cleanrl_venv.sh && python benchmarks/speed.py --cleanrl ../cleanrl   # against CleanRL's scripts

Each configuration trains for a warm-up iteration plus enough iterations to measure (tracking and
video off) in a fresh process. From the TensorBoard events it takes the SPS after the warm-up
(global steps / wall time between the first and the last logged iteration), the share of that
time spent in the rollout (env steps, inference, GAE) and in the update, and from the process
the peak resident memory. When stable-baselines3 is installed, the same invocation runs SB3's
PPO with the same hyperparameters at each script's default --num-envs and reports our SPS as a
multiple of it. Writes <out>/speed.md, <out>/speed.csv and <out>/speed.png (SPS against --num-envs).

With --cleanrl DIR (a clone of github.com/vwxyzjn/cleanrl) it runs, instead, our scripts and CleanRL's side by side,
interleaved, whole processes at their defaults (benchmarks/vs_cleanrl.py); writes <out>/vs_cleanrl.{md,csv}.
"""

import csv
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.run import read_events  # noqa: E402
from tests.conftest import REPO  # noqa: E402  (a Path)

# per script: the benchmark env, its default --num-envs and --num-steps, their sweeps, and env steps to measure
SETTINGS = {
    "ppo_discrete.py": {
        "env_id": "CartPole-v1",
        "num_envs": 4,
        "num_steps": 128,
        "sweep": [1, 4, 16, 64],
        "steps_sweep": [32, 512],
        "measure": 50_000,
    },
    "ppo_continuous.py": {
        "env_id": "HalfCheetah-v5",
        "num_envs": 1,
        "num_steps": 2048,
        "sweep": [1, 4, 16],
        "steps_sweep": [512, 8192],
        "measure": 10_000,
    },
    "ppo_atari.py": {
        "env_id": "BreakoutNoFrameskip-v4",
        "num_envs": 8,
        "num_steps": 128,
        "sweep": [1, 8, 32],
        "steps_sweep": [32, 512],
        "measure": 6_000,
    },
}

# SB3 PPO with each script's default hyperparameters (Atari is not compared: SB3 needs its own wrappers)
SB3_PROGRAM = """
import sys, time, torch, gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
script, env_id, num_envs, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
marks = []
class Marks(BaseCallback):
    def _on_rollout_start(self):
        marks.append((self.num_timesteps, time.time()))
    def _on_step(self):
        return True
if script == "ppo_discrete.py":
    kwargs = dict(n_steps=128, batch_size=128, n_epochs=4, learning_rate=lambda f: 2.5e-4 * f, ent_coef=0.01,
                  policy_kwargs=dict(net_arch=[64, 64], activation_fn=torch.nn.Tanh))
else:
    kwargs = dict(n_steps=2048, batch_size=64, n_epochs=10, learning_rate=lambda f: 3e-4 * f, ent_coef=0.0,
                  policy_kwargs=dict(net_arch=[64, 64], activation_fn=torch.nn.Tanh, log_std_init=0.0))
model = PPO("MlpPolicy", make_vec_env(env_id, n_envs=num_envs, seed=1), gamma=0.99, gae_lambda=0.95, clip_range=0.2,
            vf_coef=0.5, max_grad_norm=0.5, seed=1, device="cpu", verbose=0, **kwargs)
model.learn(total, callback=Marks())
marks.append((model.num_timesteps, time.time()))
(s0, t0), (s1, t1) = marks[1], marks[-1]
print((s1 - s0) / (t1 - t0))
"""


@dataclass
class Args:
    scripts: list[str] = field(default_factory=lambda: list(SETTINGS))
    """scripts to measure"""
    sweep: bool = True
    """measure each script's --num-envs sweep (1 4 16 64 / 1 4 16 / 1 8 32) and --num-steps sweep (a quarter and 4x
    the default); off: only its defaults"""
    workers: list[int] = field(default_factory=lambda: [1])
    """data-parallel workers (more than 1: launched with torchrun, one torch thread each)"""
    compile: bool = False
    """also measure each script's defaults with --compile (its compile time shows in the first iteration's seconds)"""
    atari_backends: list[str] = field(default_factory=lambda: ["ale"])
    """ppo_atari.py's --env-backend values: each of its configurations is measured once per back end"""
    sb3: bool = True
    """also run stable-baselines3 when it is installed"""
    out: str = "benchmarks/results/speed"
    """output folder (speed.md, speed.csv; vs_cleanrl.md, vs_cleanrl.csv with --cleanrl)"""
    cleanrl: Optional[str] = None
    """a clone of github.com/vwxyzjn/cleanrl: run its PPO scripts against ours, side by side (nothing else)"""
    cleanrl_python: str = os.path.join(os.path.dirname(REPO), "cleanrl-venv", "bin", "python")
    """the Python of the virtualenv CleanRL's scripts run in (made by bash benchmarks/cleanrl_venv.sh)"""
    pairs: int = 3
    """--cleanrl: runs of each side per workload, interleaved"""
    workloads: list[str] = field(
        default_factory=lambda: ["cartpole", "halfcheetah", "breakout-ale", "breakout", "smoke"]
    )
    """--cleanrl: which workloads (cartpole 500k steps, halfcheetah 100k, breakout-ale and breakout 6,144 steps with
    --env-backend ale and the default, smoke 2,048 CartPole steps)"""


def measure(
    script: str, num_envs: int, num_steps: int, workers: int = 1, compile: bool = False, backend: str = "ale"
) -> dict:
    """Train `script` for a warm-up iteration plus the measured ones; -> SPS, time shares, peak memory."""
    settings = SETTINGS[script]
    batch = num_envs * num_steps * workers
    iterations = 1 + max(2, math.ceil(settings["measure"] / batch))
    flags = [
        "--env-id",
        settings["env_id"],
        "--num-envs",
        str(num_envs),
        "--num-steps",
        str(num_steps),
        "--total-timesteps",
        str(iterations * batch),
        "--no-track",
    ]
    if script == "ppo_atari.py":
        flags += ["--env-backend", backend]
    if compile:
        flags += ["--compile"]
    if workers == 1:
        command, env = [sys.executable, str(REPO / script), *flags], dict(os.environ)
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(workers)]
        command, env = [*launch, str(REPO / script), *flags], {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as cwd:
        started = time.time()
        with open(os.path.join(cwd, "stderr.log"), "w+") as stderr:
            proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)  # the peak memory of this process (or its largest worker)
            if status != 0:
                stderr.seek(0)
                raise SystemExit(f"speed.py: {' '.join(command)} failed:\n{stderr.read()[-2000:]}")
        seconds = time.time() - started
        (run_dir,) = [os.path.join(cwd, "runs", name) for name in os.listdir(os.path.join(cwd, "runs"))]
        sps_events = read_events(run_dir, "charts/SPS")
        rollout = np.array([value for _, _, value in read_events(run_dir, "time/rollout_seconds")])
        update = np.array([value for _, _, value in read_events(run_dir, "time/update_seconds")])
    (t0, s0, _), (t1, s1, _) = sps_events[0], sps_events[-1]  # the first iteration is the warm-up
    return {
        "script": script,
        "env_id": settings["env_id"] + (f" ({backend})" if script == "ppo_atari.py" else ""),
        "num_envs": num_envs,
        "num_steps": num_steps,
        "workers": workers,
        "compile": compile,
        "sps": (s1 - s0) / (t1 - t0),
        "rollout_share": rollout[1:].sum() / (t1 - t0),
        "update_share": update[1:].sum() / (t1 - t0),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "process_seconds": seconds,
        "first_iteration_seconds": t0 - started,
    }


def measure_sb3(script: str) -> Optional[float]:
    settings = SETTINGS[script]
    batch = settings["num_envs"] * settings["num_steps"]
    total = (1 + max(2, math.ceil(settings["measure"] / batch))) * batch
    proc = subprocess.run(
        [sys.executable, "-c", SB3_PROGRAM, script, settings["env_id"], str(settings["num_envs"]), str(total)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        raise SystemExit(f"speed.py: stable-baselines3 on {settings['env_id']} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main(args: Args) -> None:
    if args.cleanrl is not None:
        from benchmarks.vs_cleanrl import run

        run(args.cleanrl, args.cleanrl_python, args.workloads, args.pairs, args.out)
        return
    os.makedirs(args.out, exist_ok=True)
    try:
        import stable_baselines3  # noqa: F401

        with_sb3 = args.sb3
    except ImportError:
        with_sb3 = False
    rows = []
    for script in args.scripts:
        sb3_sps = measure_sb3(script) if with_sb3 and script != "ppo_atari.py" else None
        envs, steps = SETTINGS[script]["num_envs"], SETTINGS[script]["num_steps"]
        configurations = [
            (num_envs, steps, workers, False)
            for num_envs in (SETTINGS[script]["sweep"] if args.sweep else [envs])
            for workers in args.workers
        ]
        if args.sweep:
            configurations += [(envs, num_steps, 1, False) for num_steps in SETTINGS[script]["steps_sweep"]]
        if args.compile:
            configurations.append((envs, steps, 1, True))
        backends = args.atari_backends if script == "ppo_atari.py" else ["ale"]  # (only Atari has back ends)
        for (num_envs, num_steps, workers, compile), backend in itertools.product(configurations, backends):
            row = measure(script, num_envs, num_steps, workers, compile, backend)
            default = (num_envs, num_steps, workers, compile) == (envs, steps, 1, False)
            row["sb3_sps"] = sb3_sps if default else None
            rows.append(row)
            print(
                f"{script} --num-envs {num_envs} --num-steps {num_steps} x {workers} worker(s)"
                f"{' --compile' if compile else ''}: {row['sps']:.0f} SPS "
                f"(rollout {row['rollout_share']:.0%}, update {row['update_share']:.0%}), {row['peak_rss_mib']:.0f} MiB"
                + (f"; SB3 {sb3_sps:.0f} SPS, ratio {row['sps'] / sb3_sps:.2f}" if row["sb3_sps"] else ""),
                flush=True,
            )

    with open(os.path.join(args.out, "speed.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| script | env | --num-envs | --num-steps | workers | --compile | SPS | rollout | update | peak RSS "
        "| first iteration | SB3 SPS | ours / SB3 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sb3 = f"{row['sb3_sps']:.0f} | {row['sps'] / row['sb3_sps']:.2f}x" if row["sb3_sps"] else " | "
        lines.append(
            f"| `{row['script']}` | {row['env_id']} | {row['num_envs']} | {row['num_steps']} | {row['workers']} "
            f"| {'yes' if row['compile'] else 'no'} | "
            f"{row['sps']:.0f} | {row['rollout_share']:.0%} | {row['update_share']:.0%} "
            f"| {row['peak_rss_mib']:.0f} MiB | "
            f"{row['first_iteration_seconds']:.1f} s | {sb3} |"
        )
    with open(os.path.join(args.out, "speed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, os.path.join(args.out, "speed.png"))


def plot(rows: list[dict], path: str) -> None:
    """SPS against --num-envs (top) and --num-steps (bottom), one column per script, the update's share annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scripts = list(dict.fromkeys(row["script"] for row in rows))
    fig, axes = plt.subplots(2, len(scripts), figsize=(4.5 * len(scripts), 6.4), squeeze=False)
    for column, script in enumerate(scripts):
        envs, steps = SETTINGS[script]["num_envs"], SETTINGS[script]["num_steps"]
        for ax, swept, fixed, fixed_value in [
            (axes[0][column], "num_envs", "num_steps", steps),
            (axes[1][column], "num_steps", "num_envs", envs),
        ]:
            for workers, env_id in sorted({(row["workers"], row["env_id"]) for row in rows if row["script"] == script}):
                points = sorted(
                    (
                        row
                        for row in rows
                        if row["script"] == script
                        and (row["workers"], row["env_id"]) == (workers, env_id)
                        and row[fixed] == fixed_value
                        and not row["compile"]
                    ),
                    key=lambda row: row[swept],
                )
                if len(points) < 2:
                    continue
                label = f"{workers} worker(s)" + (f", {env_id.split(' ')[-1][1:-1]} back end" if "(" in env_id else "")
                ax.plot([row[swept] for row in points], [row["sps"] for row in points], "o-", label=label)
                for row in points:
                    ax.annotate(
                        f"update {row['update_share']:.0%}",
                        (row[swept], row["sps"]),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(3, -10),
                    )
            ax.set_xscale("log", base=2)
            ax.set_ylim(bottom=0)
            ax.set_title(
                f"{script} ({SETTINGS[script]['env_id']}), --{fixed.replace('_', '-')} {fixed_value}", fontsize=8
            )
            ax.set_xlabel(f"--{swept.replace('_', '-')}" + (" (per worker)" if swept == "num_envs" else ""))
            ax.set_ylabel("env steps per second")
            if ax.has_data():
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(tyro.cli(Args))
