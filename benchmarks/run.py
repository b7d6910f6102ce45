"""Train a script on env ids x seeds, then write learning curves (CSV), a summary and a plot.

    python benchmarks/run.py --script ppo_discrete.py --env-ids CartPole-v1 Acrobot-v1 --seeds 1 2 3

Runs go to <out>/runs/ (TensorBoard), the curves to <out>/curves.csv, the per-seed and per-env
summary (mean of the last 100 episodic returns, the CleanRL protocol) to <out>/summary.md and
<out>/summary.csv, and the plot to <out>/curves.png. Extra flags for the script go after `--`:

    python benchmarks/run.py --script ppo_discrete.py --env-ids CartPole-v1 -- --total-timesteps 100000

To compare variants, give each run a --label and draw earlier runs' curves into the plot with --compare:

    python benchmarks/run.py --env-ids tests.envs:CartPoleNoVelocity-v0 --label feed-forward --out out/ff
    python benchmarks/run.py --env-ids tests.envs:CartPoleNoVelocity-v0 --label recurrent --out out/lstm \
        --compare out/ff -- --recurrent
"""

import csv
import glob
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import tyro

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_events(run_dir: str, tag: str) -> list[tuple[float, int, float]]:
    """(wall time, step, value) of every event logged under `tag` in a run's TensorBoard files, in write order.

    A resumed run opens its writer with a purge step (the checkpoint's step + 1): events of earlier files at or
    after that step were logged by the interrupted process after its checkpoint, and are dropped, as TensorBoard
    drops them."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    events = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in LegacyEventFileLoader(path).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                events = [(wall_time, step, value) for wall_time, step, value in events if step < event.step]
            events.extend(
                (event.wall_time, event.step, value.simple_value) for value in event.summary.value if value.tag == tag
            )
    return events


def read_scalars(run_dir: str, tag: str) -> list[tuple[int, float]]:
    """All (step, value) pairs logged under `tag`, in write order."""
    return [(step, value) for _, step, value in read_events(run_dir, tag)]


def window_bounds(window_steps: int, last_step: int) -> list[tuple[int, int]]:
    """(first, last) step of each window of `window_steps` steps from 0 to `last_step`; the last takes the remainder."""
    count = max(1, last_step // window_steps)
    return [(k * window_steps, last_step if k == count - 1 else (k + 1) * window_steps) for k in range(count)]


def window_means(steps: list[int], returns: list[float], window_steps: int, last_step: int) -> list[float]:
    """Mean return of the episodes that ended in each of window_bounds' windows (nan where none ended)."""
    count = len(window_bounds(window_steps, last_step))
    window_of = np.minimum(np.asarray(steps) // window_steps, count - 1)
    values = np.asarray(returns, dtype=float)
    return [float(values[window_of == k].mean()) if np.any(window_of == k) else np.nan for k in range(count)]


def last_episodes_mean(run_dir: str, last: int = 100) -> float:
    """Mean episodic return over the run's last `last` episodes."""
    returns = [value for _, value in read_scalars(run_dir, "charts/episodic_return")]
    return float(np.mean(returns[-last:]))


@dataclass
class Args:
    script: str = "ppo_discrete.py"
    """the script to train, relative to the repository root"""
    env_ids: list[str] = field(default_factory=lambda: ["CartPole-v1", "Acrobot-v1"])
    """environments to train on"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """seeds to train with"""
    jobs: int = 2
    """runs at a time (one per core suits the small MLP scripts)"""
    threads: Optional[int] = None
    """torch threads per run (None: cores / jobs); set it when several run.py invocations share the cores"""
    out: str = "benchmarks/results/latest"
    """output folder (runs/, curves.csv, summary.md, summary.csv, curves.png)"""
    plot: bool = True
    """draw curves.png (needs matplotlib)"""
    label: Optional[str] = None
    """name of these runs in the plot and curves.csv (None: the script's file name)"""
    compare: list[str] = field(default_factory=list)
    """output folders of earlier runs whose curves.csv to draw into this plot too"""
    window_steps: Optional[int] = None
    """also tabulate, per seed, the mean return of the episodes that ended in each window of this many steps"""
    train: bool = True
    """train; off: summarise and draw the runs already in <out>/runs/ (e.g. again, with --compare; give the same
    flags after `--` for the summary's header)"""


def train(args: Args, env_id: str, seed: int, extra: list[str]) -> tuple[str, int, str, float]:
    exp_name = os.path.splitext(os.path.basename(args.script))[0]
    command = [
        sys.executable,
        os.path.join(REPO, args.script),
        "--env-id",
        env_id,
        "--seed",
        str(seed),
        "--exp-name",
        exp_name,
        "--no-track",
        *extra,
    ]
    started = time.time()
    log_path = os.path.join(args.out, f"{env_id.replace(':', '_').replace('/', '_')}__{seed}.log")
    # parallel torch processes each spinning one thread per core slow each other down several times
    threads = str(args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with open(log_path, "w") as log:
        subprocess.run(command, cwd=args.out, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return env_id, seed, latest_run(args, env_id, seed), time.time() - started


def latest_run(args: Args, env_id: str, seed: int) -> str:
    exp_name = os.path.splitext(os.path.basename(args.script))[0]
    pattern = os.path.join(args.out, "runs", f"{env_id.replace(':', '_').replace('/', '_')}__{exp_name}__{seed}__*")
    if not glob.glob(pattern):
        print(
            f"no run of {env_id} seed {seed} in {args.out}/runs/ (pattern {os.path.basename(pattern)}): "
            "train it first, or drop --no-train",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return max(glob.glob(pattern), key=os.path.getmtime)


def training_seconds(run_dir: str) -> float:
    """Wall time between a run's first and last logged iteration (its TensorBoard event times)."""
    times = [wall_time for wall_time, _, _ in read_events(run_dir, "charts/SPS")]
    return max(times) - min(times) if times else np.nan


def window_table(rows: list[dict], results: list[tuple], window_steps: int) -> list[str]:
    """Markdown table: a row per env and seed with its episode count and the mean return in each step window."""
    last_step = max(read_scalars(run_dir, "charts/SPS")[-1][0] for _, _, run_dir, _ in results)
    names = [f"{start / 1000:.0f}-{end / 1000:.0f}k" for start, end in window_bounds(window_steps, last_step)]
    lines = [
        f"mean return of the episodes that ended in each {window_steps / 1000:g}k-step window",
        "",
        "| env | seed | episodes | " + " | ".join(names) + " |",
        "|-|-|-|" + "-|" * len(names),
    ]
    for env_id, seed, _, _ in results:
        episodes = [(row["step"], row["return"]) for row in rows if row["env_id"] == env_id and row["seed"] == seed]
        means = window_means([step for step, _ in episodes], [value for _, value in episodes], window_steps, last_step)
        lines.append(f"| {env_id} | {seed} | {len(episodes)} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return lines


def plot_curves(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = sorted({row["env_id"] for row in rows})
    fig, axes = plt.subplots(1, len(env_ids), figsize=(5 * len(env_ids), 3.6), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        env_rows = [row for row in rows if row["env_id"] == env_id]
        grid = np.linspace(min(row["step"] for row in env_rows), max(row["step"] for row in env_rows), 100)
        for label in dict.fromkeys(row["label"] for row in env_rows):  # labels in order of appearance
            curves = []
            for seed in sorted({row["seed"] for row in env_rows if row["label"] == label}):
                steps = np.array([row["step"] for row in env_rows if row["label"] == label and row["seed"] == seed])
                returns = np.array([row["return"] for row in env_rows if row["label"] == label and row["seed"] == seed])
                # each grid point shows the mean of the last (up to) 100 episodes ended by then
                window = [returns[max(0, i - 100) : i] for i in np.searchsorted(steps, grid, side="right")]
                curves.append([w.mean() if len(w) else np.nan for w in window])
            curves = np.array(curves)
            with warnings.catch_warnings():  # grid points before any seed's first episode end stay blank
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
            line = ax.plot(grid, mean, label=f"{label} (mean of {len(curves)} seeds, min-max shaded)")
            ax.fill_between(grid, low, high, alpha=0.25, color=line[0].get_color())
        ax.set_title(env_id)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episodic return (last 100)")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(args: Args, extra: list[str]) -> None:
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    jobs = [(env_id, seed) for env_id in args.env_ids for seed in args.seeds]
    if args.train:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(lambda job: train(args, *job, extra), jobs))
    else:
        results = [(env_id, seed, latest_run(args, env_id, seed)) for env_id, seed in jobs]
        results = [(env_id, seed, run_dir, training_seconds(run_dir)) for env_id, seed, run_dir in results]

    label = args.label or os.path.basename(args.script)
    rows, summary = [], []
    for env_id, seed, run_dir, seconds in results:
        for step, value in read_scalars(run_dir, "charts/episodic_return"):
            rows.append(
                {"script": args.script, "label": label, "env_id": env_id, "seed": seed, "step": step, "return": value}
            )
        # with --save-model, ppo_continuous.py evaluates the saved model and logs eval/episodic_return
        evaluation = [value for _, value in read_scalars(run_dir, "eval/episodic_return")]
        summary.append(
            {
                "env_id": env_id,
                "seed": seed,
                "last100": last_episodes_mean(run_dir),
                "eval": float(np.mean(evaluation)) if evaluation else np.nan,
                "seconds": seconds,
            }
        )
        evaluated = f", evaluation {summary[-1]['eval']:.2f}" if evaluation else " (no evaluation: --save-model is off)"
        print(f"{env_id} seed {seed}: last-100 return {summary[-1]['last100']:.2f}{evaluated}, in {seconds:.0f} s")

    with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    evaluated = not np.all(np.isnan([s["eval"] for s in summary]))
    lines = [
        f"`{args.script}` {' '.join(extra)}",
        "",
        "| env | seeds | last-100 return (mean +- std over seeds) | per seed |"
        + (" saved-model evaluation per seed |" if evaluated else ""),
        "|-|-|-|-|" + ("-|" if evaluated else ""),
    ]
    for env_id in args.env_ids:
        per_seed = [s["last100"] for s in summary if s["env_id"] == env_id]
        evaluations = [s["eval"] for s in summary if s["env_id"] == env_id]
        lines.append(
            f"| {env_id} | {len(per_seed)} | {np.mean(per_seed):.2f} +- {np.std(per_seed):.2f} | "
            f"{', '.join(f'{r:.2f}' for r in per_seed)} |"
            + (f" {', '.join(f'{r:.2f}' for r in evaluations)} |" if evaluated else "")
        )
    if args.window_steps:
        lines += ["", *window_table(rows, results, args.window_steps)]
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.plot:
        compared = []
        for folder in args.compare:
            with open(os.path.join(folder, "curves.csv")) as f:
                compared += [
                    {**row, "seed": int(row["seed"]), "step": int(row["step"]), "return": float(row["return"])}
                    for row in csv.DictReader(f)
                ]
        plot_curves(compared + rows, os.path.join(args.out, "curves.png"))
        print(f"plot: {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    main(tyro.cli(Args, args=argv[:split]), argv[split + 1 :])
