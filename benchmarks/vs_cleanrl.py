"""Our scripts against CleanRL's, side by side in one invocation (run by `benchmarks/speed.py --cleanrl DIR`).

Each workload runs ours and CleanRL's in turn (A B A B ..., the order swapped every other pair so that neither
always runs second), each in a fresh process in a fresh working directory, at its own defaults but for
--total-timesteps. It times the whole process (start-up included, as a user waits for it) and reads its peak
resident memory, then reports per workload the median wall of each side and the min / median / max over the
pairs of CleanRL's wall / ours. CleanRL's scripts run from the clone you name, unmodified, with the Python of
a virtualenv holding the versions they need (`bash benchmarks/cleanrl_venv.sh` makes one).
"""

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# CleanRL's Atari script needs ale-py's games registered, which gymnasium 0.29.1 does not do for ale-py 0.10:
# import ale_py first, then run the script unmodified as __main__
RUN_WITH_ALE = "import ale_py, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"

# name -> (our script and flags, CleanRL's script and flags, whether CleanRL's needs ale-py imported first)
WORKLOADS = {
    "cartpole": (
        ["ppo_discrete.py", "--env-id", "CartPole-v1", "--total-timesteps", "500000"],
        ["cleanrl/ppo.py", "--env-id", "CartPole-v1", "--total-timesteps", "500000"],
        False,
    ),
    "halfcheetah": (  # CleanRL's gymnasium 0.29.1 has HalfCheetah-v4 (the same model and reward as v5's defaults)
        ["ppo_continuous.py", "--env-id", "HalfCheetah-v5", "--total-timesteps", "100000"],
        ["cleanrl/ppo_continuous_action.py", "--env-id", "HalfCheetah-v4", "--total-timesteps", "100000"],
        False,
    ),
    "breakout-ale": (
        ["ppo_atari.py", "--env-id", "BreakoutNoFrameskip-v4", "--env-backend", "ale", "--total-timesteps", "6144"],
        ["cleanrl/ppo_atari.py", "--env-id", "BreakoutNoFrameskip-v4", "--total-timesteps", "6144"],
        True,
    ),
    "breakout": (
        ["ppo_atari.py", "--env-id", "BreakoutNoFrameskip-v4", "--total-timesteps", "6144"],
        ["cleanrl/ppo_atari.py", "--env-id", "BreakoutNoFrameskip-v4", "--total-timesteps", "6144"],
        True,
    ),
    "smoke": (
        ["ppo_discrete.py", "--env-id", "CartPole-v1", "--total-timesteps", "2048"],
        ["cleanrl/ppo.py", "--env-id", "CartPole-v1", "--total-timesteps", "2048"],
        False,
    ),
}


def timed(command: list[str], env: dict) -> tuple[float, float]:
    """Run `command` in a fresh temporary directory; -> (wall seconds, peak resident MiB), or exit on a failure."""
    with tempfile.TemporaryDirectory() as cwd, open(os.path.join(cwd, "stderr.log"), "w+") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        if status != 0:
            stderr.seek(0)
            raise SystemExit(f"vs_cleanrl.py: {' '.join(command)} failed:\n{stderr.read()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def run(cleanrl: str, cleanrl_python: str, workloads: list[str], pairs: int, out: Optional[str]) -> list[dict]:
    if not os.path.isfile(os.path.join(cleanrl, "cleanrl", "ppo.py")):
        raise SystemExit(f"--cleanrl {cleanrl}: no cleanrl/ppo.py there; pass a clone of github.com/vwxyzjn/cleanrl")
    if not os.access(cleanrl_python, os.X_OK):
        raise SystemExit(
            f"--cleanrl-python {cleanrl_python}: not an executable; make the venv with bash benchmarks/cleanrl_venv.sh"
        )
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"--workloads: unknown {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    cleanrl = os.path.abspath(cleanrl)
    theirs_env = {**os.environ, "PYTHONPATH": cleanrl}  # cleanrl_utils (Atari wrappers) imports from the clone
    rows = []
    for name in workloads:
        ours_args, theirs_args, with_ale = WORKLOADS[name]
        ours = [sys.executable, os.path.join(REPO, ours_args[0]), *ours_args[1:]]
        script = os.path.join(cleanrl, theirs_args[0])
        theirs = [cleanrl_python, *(["-c", RUN_WITH_ALE] if with_ale else []), script, *theirs_args[1:]]
        results = {"ours": [], "cleanrl": []}
        for pair in range(pairs):
            order = [("ours", ours, os.environ), ("cleanrl", theirs, theirs_env)]
            for side, command, env in order if pair % 2 == 0 else order[::-1]:
                results[side].append(timed(command, dict(env)))
                seconds, mib = results[side][-1]
                print(f"{name} pair {pair + 1}/{pairs}: {side} {seconds:.2f} s, {mib:.0f} MiB", flush=True)
        ratios = [theirs_s / ours_s for (ours_s, _), (theirs_s, _) in zip(results["ours"], results["cleanrl"])]
        rows.append(
            {
                "workload": name,
                "ours": " ".join(ours_args),
                "cleanrl": " ".join(theirs_args),
                "pairs": pairs,
                "ours_median_s": statistics.median(s for s, _ in results["ours"]),
                "cleanrl_median_s": statistics.median(s for s, _ in results["cleanrl"]),
                "ratio_min": min(ratios),
                "ratio_median": statistics.median(ratios),
                "ratio_max": max(ratios),
                "ours_peak_mib": max(m for _, m in results["ours"]),
                "cleanrl_peak_mib": max(m for _, m in results["cleanrl"]),
            }
        )
    lines = [
        "| workload | ours (median) | CleanRL (median) | CleanRL / ours: min, median, max "
        "| peak memory: ours, CleanRL |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workload']} | {row['ours_median_s']:.1f} s | {row['cleanrl_median_s']:.1f} s "
            f"| {row['ratio_min']:.2f}x, **{row['ratio_median']:.2f}x**, {row['ratio_max']:.2f}x "
            f"| {row['ours_peak_mib']:.0f} MiB, {row['cleanrl_peak_mib']:.0f} MiB |"
        )
    print("\n".join(lines))
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "vs_cleanrl.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        with open(os.path.join(out, "vs_cleanrl.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
    return rows
