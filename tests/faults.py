"""Faults made on purpose, and the tests that must catch them: a check of the suite's strength.

    python tests/faults.py              # every fault: each in a scratch copy of the repository, its tests run there
    python tests/faults.py --list       # the faults and their tests
    python tests/faults.py lr-not-set   # some of them

A fault replaces one piece of a file's text; the listed tests must then fail. Prints "caught" or "MISSED"
per fault and exits 1 if any was missed. Not part of the test suite: it runs parts of the suite once per
fault (several minutes in all).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Fault:
    name: str
    file: str
    old: str
    new: str
    tests: list[str]


LONG = "tests/test_long_runs.py"
FAULTS = [
    Fault(
        "lr-not-set",
        "ppo_discrete.py",
        'optimizer.param_groups[0]["lr"] = lr_now',
        "pass  # the learning rate is only logged",
        [f"{LONG}::test_checkpoints_are_kept_and_hold_the_run[ppo_discrete.py]"],
    ),
    Fault(
        "own-gradient",
        "ppo_discrete.py",
        "loss = average_gradients_(parameters, loss)",
        "pass  # own gradient",
        ["tests/test_distributed.py::test_workers_end_bit_identical[ppo_discrete.py]"],
    ),
    Fault(
        "rank-0-gradient",
        "ppo_discrete.py",
        "        dist.all_reduce(x)\n        x /= dist.get_world_size()",
        "        dist.broadcast(x, src=0)  # rank 0's, not the mean",
        ["tests/test_distributed.py::test_workers_end_bit_identical[ppo_discrete.py]"],
    ),
    Fault(
        "own-statistics",
        "ppo_continuous.py",
        "self.return_rms.update(all_gather_rows(self.returns))",
        "self.return_rms.update(self.returns)  # this worker's returns only",
        ["tests/test_distributed.py::test_workers_end_bit_identical[ppo_continuous.py]"],
    ),
    Fault(
        "atari-gae",
        "ppo_atari.py",
        "decays = gamma * gae_lambda * (1 - ended)",
        "decays = gamma * (1 - ended)",
        ["tests/test_gae.py", "-k", "ppo_atari"],
    ),
    Fault(
        "atari-value-clip",
        "ppo_atari.py",
        "return 0.5 * torch.max(unclipped, clipped).mean()",
        "return 0.5 * torch.min(unclipped, clipped).mean()",
        ["tests/test_losses.py", "-k", "ppo_atari"],
    ),
    Fault(
        "final-obs-unnormalised",
        "ppo_continuous.py",
        'final_obs = norm.observe(np.stack(info["final_obs"][time_limited]), update=False, device=device)',
        'final_obs = torch.as_tensor(np.stack(info["final_obs"][time_limited]), dtype=torch.float32).reshape(int(time_limited.sum()), -1)',
        ["tests/test_faults.py::test_final_observations_are_valued_normalised"],
    ),
    Fault(
        "final-obs-lstm-state",
        "ppo_discrete.py",
        "final_state = select_envs(state.lstm_state, time_limited)",
        "final_state = select_envs(rollout.lstm_state, time_limited)",
        ["tests/test_faults.py::test_final_observations_are_valued_from_the_state_that_just_acted"],
    ),
    Fault(
        "resume-without-rng",
        "ppo_continuous.py",
        'set_rng_states(checkpoint["rng"][self.rank], self.device)',
        "pass  # RNGs not restored",
        ["tests/test_faults.py", "-k", "resuming_mid_run and continuous"],
    ),
    Fault(
        "resume-without-adam",
        "ppo_discrete.py",
        'load_state(optimizer, checkpoint["optimizer"], "--resume", self.args.resume)',
        "pass  # Adam's moments not restored",
        ["tests/test_faults.py", "-k", "resuming_mid_run and discrete"],
    ),
    Fault(
        "ale-without-maxpool",
        "ppo_atari.py",
        "maxpool=args.frame_skip >= 2,",
        "maxpool=False,",
        ["tests/test_atari.py::test_backends_match_each_other_without_their_reset_differences"],
    ),
    Fault(
        "no-finite-check-on-save",
        "ppo_atari.py",
        "        if bad is not None:\n",
        "        if False:\n",
        ["tests/test_faults.py::test_weights_blown_up_by_the_last_update_are_never_saved[ppo_atari.py]"],
    ),
    Fault(
        "rotation-by-name",
        "ppo_continuous.py",
        "for path in ([path for path in others if path not in own] + written)[:-keep]:",
        "for path in sorted(others)[:-keep]:",
        ["tests/test_faults.py", f"{LONG}", "-k", "rotation or resuming_an_older"],
    ),
    Fault(
        "shared-run-directory",
        "ppo_discrete.py",
        'os.mkdir(f"runs/{name}")',
        'os.makedirs(f"runs/{name}", exist_ok=True)',
        ["tests/test_faults.py::test_runs_started_in_the_same_second_get_their_own_directories"],
    ),
    Fault(
        "tmp-left-behind",
        "ppo_discrete.py",
        '        if os.path.exists(f"{path}.tmp"):\n            os.remove(f"{path}.tmp")',
        "        pass",
        ["tests/test_faults.py", "-k", "full_disk and discrete"],
    ),
    Fault(
        "evaluation-ignores-signals",
        "ppo_continuous.py",
        "signal.signal(signal.SIGINT, stop_at_once)  # no iteration left to finish",
        "pass  # no iteration left to finish",
        ["tests/test_faults.py", "-k", "evaluation_after_training and continuous"],
    ),
    Fault(
        "eval-checkpoint-ignores-signals",
        "ppo_atari.py",
        "    signal.signal(signal.SIGTERM, stop_at_once)\n    check_tracking(args)\n    checkpoint = load_checkpoint(",
        "    check_tracking(args)\n    checkpoint = load_checkpoint(",
        ["tests/test_faults.py", "-k", "eval_checkpoint_at_once and atari"],
    ),
    Fault(
        "box-action-flat",
        "ppo_continuous.py",
        "env.step(action.reshape(env.action_space.shape))",
        "env.step(action)",
        ["tests/test_faults.py::test_any_box_shape_trains_and_evaluates"],
    ),
    Fault(
        "atari-evaluates-on-gymnasium",
        "ppo_atari.py",
        '"num_envs": 1, "vector_mode": "sync"}',
        '"num_envs": 1, "vector_mode": "sync", "env_backend": "gymnasium"}',
        [f"{LONG}::test_atari_evaluates_on_the_back_end_it_trained_on"],
    ),
    Fault(
        "no-cuda-rng",
        "ppo_discrete.py",
        'states["cuda"] = torch.cuda.get_rng_state(device)',
        "pass",
        ["tests/test_faults.py", "-k", "cuda_rng and discrete"],
    ),
    Fault(
        "shape-mismatch-traceback",
        "ppo_continuous.py",
        "except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:",
        "except KeyError as e:",
        [LONG, "-k", "malformed and wrong-shape and continuous"],
    ),
    Fault(
        "no-memory-check",
        "ppo_discrete.py",
        "    if num_bytes > free:\n",
        "    if False:\n",
        ["tests/test_cli.py", "-k", "1000000000000 and ppo_discrete"],
    ),
    Fault(
        "inf-learning-rate",
        "ppo_continuous.py",
        'must be a positive number, got {value}")\n        if not math.isfinite(value):',
        'must be a positive number, got {value}")\n        if False:',
        ["tests/test_cli.py", "-k", "learning-rate and inf and ppo_continuous"],
    ),
]


def replay(fault: Fault) -> bool:
    """True when the fault's tests fail in a scratch copy with the fault made."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    with tempfile.TemporaryDirectory() as scratch:
        for name in files:
            if os.path.exists(os.path.join(REPO, name)):
                os.makedirs(os.path.dirname(os.path.join(scratch, name)) or scratch, exist_ok=True)
                shutil.copy2(os.path.join(REPO, name), os.path.join(scratch, name))
        path = os.path.join(scratch, fault.file)
        text = open(path).read()
        if text.count(fault.old) != 1:
            sys.exit(
                f"{fault.name}: the text to replace occurs {text.count(fault.old)} times in {fault.file}; update tests/faults.py"
            )
        open(path, "w").write(text.replace(fault.old, fault.new))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *fault.tests],
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        if proc.returncode == 5:
            sys.exit(f"{fault.name}: {fault.tests} selects no test; update tests/faults.py")
        return proc.returncode == 1


if __name__ == "__main__":
    names = sys.argv[1:]
    if names == ["--list"]:
        for fault in FAULTS:
            print(f"{fault.name}: {fault.file}: {' '.join(fault.tests)}")
        sys.exit(0)
    unknown = set(names) - {fault.name for fault in FAULTS}
    if unknown:
        sys.exit(f"unknown faults {sorted(unknown)}; see --list")
    missed = []
    for fault in [fault for fault in FAULTS if not names or fault.name in names]:
        start = time.time()
        caught = replay(fault)
        print(f"{'caught' if caught else 'MISSED'}  {fault.name} ({time.time() - start:.0f} s)", flush=True)
        missed += [] if caught else [fault.name]
    sys.exit(1 if missed else 0)
