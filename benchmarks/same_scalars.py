"""Fixed-seed runs whose logged scalars a change meant to keep behaviour must leave bit-identical.

    python benchmarks/same_scalars.py run REPO OUT [CASE ...]   # each case with the scripts of REPO -> OUT/<case>.json
    python benchmarks/same_scalars.py compare BEFORE AFTER      # IDENTICAL or the tags that differ, per case

To check a refactor: `git worktree add ../before <old commit>`, run both trees into two folders, compare. The cases
cover the three scripts, recurrent, masking, MultiDiscrete, KL penalty, both KL stops, no GAE, torchrun and both Atari
back ends; every scalar but SPS and the time/ tags, with the evaluation after --save-model where a case saves.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

T = ["--num-envs", "2", "--num-steps", "128"]
A1 = ["--update-epochs", "1", "--num-minibatches", "2"]
D, C, A = "ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"
PONG_ALE = ["--env-id", "PongNoFrameskip-v4", "--env-backend", "ale", "--total-timesteps", "512", *T]
TR = "torchrun"  # the case runs under torchrun with 2 workers
CASES = {
    "d_default": [D, "--total-timesteps", "4096", "--save-model", "--eval-episodes", "2"],
    "d_recurrent": [D, "--total-timesteps", "2048", "--recurrent", "--num-minibatches", "2"],
    "d_recurrent_shared": [D, "--total-timesteps", "2048", "--recurrent", "--num-minibatches", "2", "--shared-network"],
    "d_mask": [D, "--env-id", "tests.envs:MaskedTarget-v0", "--action-masking", "--total-timesteps", "2048"],
    "d_multidiscrete": [D, "--env-id", "tests.envs:MultiDiscreteTarget-v0", "--total-timesteps", "2048"],
    "d_klpen": [D, "--loss", "kl-penalty", "--total-timesteps", "2048"],
    "d_klstop_mb": [D, "--target-kl", "0.002", "--kl-stop", "minibatch", "--total-timesteps", "2048"],
    "d_klstop_ep": [D, "--target-kl", "0.002", "--total-timesteps", "2048", "--anneal-clip"],
    "d_counting": [D, "--env-id", "tests.envs:CountingEnv-v0", "--total-timesteps", "2048", "--no-gae"],
    "d_torchrun": [TR, D, "--total-timesteps", "2048", *T],
    "c_default": [C, "--env-id", "Pendulum-v1", "--total-timesteps", "4096", "--save-model", "--eval-episodes", "2"],
    "c_klpen": [
        C,
        "--env-id",
        "Pendulum-v1",
        "--total-timesteps",
        "2048",
        "--loss",
        "kl-penalty",
        "--target-kl",
        "0.01",
    ],
    "c_hopper": [C, "--env-id", "Hopper-v5", "--total-timesteps", "4096"],
    "c_torchrun": [TR, C, "--env-id", "Pendulum-v1", "--total-timesteps", "2048", *T],
    "a_ale": [A, *PONG_ALE, "--save-model", "--eval-episodes", "1"],
    "a_gym": [
        A,
        "--env-id",
        "BreakoutNoFrameskip-v4",
        "--env-backend",
        "gymnasium",
        "--total-timesteps",
        "512",
        *T,
        *A1,
    ],
    "a_recurrent": [A, "--env-id", "BreakoutNoFrameskip-v4", "--recurrent", "--total-timesteps", "512", *T, *A1],
    "a_torchrun": [TR, A, *PONG_ALE, *A1],
}


def run(repo: str, out: str, case: str) -> None:
    flags = CASES[case]
    launch = [sys.executable]
    if flags[0] == TR:
        launch, flags = ["torchrun", "--standalone", "--nproc_per_node", "2"], flags[1:]
    with tempfile.TemporaryDirectory() as cwd:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": repo}
        command = [*launch, os.path.join(repo, flags[0]), *flags[1:], "--exp-name", "same"]
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode:
            print(case, "FAILED", proc.stderr[-2000:])
            return
        (run_dir,) = glob.glob(f"{cwd}/runs/*")
        events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        events.Reload()
        tags = [tag for tag in sorted(events.Tags()["scalars"]) if not tag.startswith(("time/", "charts/SPS"))]
        scalars = {tag: [[event.step, event.value] for event in events.Scalars(tag)] for tag in tags}
        json.dump(scalars, open(os.path.join(out, f"{case}.json"), "w"))
        print(case, "ok", len(scalars), "tags", flush=True)


def compare(before: str, after: str) -> bool:
    same = True
    for path in sorted(glob.glob(f"{before}/*.json")):
        name = os.path.basename(path)
        if not os.path.exists(f"{after}/{name}"):
            print(name, "MISSING")
            same = False
            continue
        old, new = json.load(open(path)), json.load(open(f"{after}/{name}"))
        differ = [tag for tag in old.keys() | new.keys() if old.get(tag) != new.get(tag)]
        print(name, "IDENTICAL" if not differ else f"DIFFERENT: {sorted(differ)}")
        same = same and not differ
    return same


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "compare":
        sys.exit(0 if compare(*rest) else 1)
    repo, out, *cases = rest
    os.makedirs(out, exist_ok=True)
    for case in cases or CASES:
        run(os.path.abspath(repo), out, case)
