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
PROMISES = "tests/test_promises.py"
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
        "            for p in parameters:  # torchrun: every worker steps with the mean gradient\n                all_mean_(p.grad)",
        "            pass  # own gradient",
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
        "final_state = select_envs(rollout.next_lstm_state, time_limited)",
        "final_state = select_envs(rollout.lstm_state, time_limited)",
        ["tests/test_faults.py::test_final_observations_are_valued_from_the_state_that_just_acted"],
    ),
    Fault(
        "resume-without-rng",
        "ppo_continuous.py",
        '        random.setstate(state["rng"]["python"])\n        name, key, *rest = state["rng"]["numpy"]\n        np.random.set_state((name, key.numpy().astype(np.uint32), *rest))\n        torch.set_rng_state(state["rng"]["torch"])',
        "        pass  # RNGs not restored",
        ["tests/test_faults.py", "-k", "resuming_mid_run and continuous"],
    ),
    Fault(
        "resume-without-adam",
        "ppo_discrete.py",
        'self.optimizer.load_state_dict(state["optimizer"])',
        "pass  # Adam's moments not restored",
        ["tests/test_faults.py", "-k", "resuming_mid_run and discrete"],
    ),
    Fault(
        "ale-without-maxpool",
        "ppo_atari.py",
        '"maxpool": args.frame_skip >= 2',
        '"maxpool": False',
        ["tests/test_atari.py::test_backends_match_each_other_without_their_reset_differences"],
    ),
    Fault(
        "no-finite-check-on-save",
        "ppo_atari.py",
        "        if (bad := first_non_finite(checkpoint)) is not None:\n",
        "        if False:\n",
        ["tests/test_faults.py::test_weights_blown_up_by_the_last_update_are_never_saved[ppo_atari.py]"],
    ),
    Fault(
        "rotation-by-name",
        "ppo_continuous.py",
        'written = sorted(glob.glob(f"runs/{self.name}/checkpoints/*.pt"), key=os.path.getmtime)',
        'written = sorted(glob.glob(f"runs/{self.name}/checkpoints/*.pt"))',
        ["tests/test_faults.py", f"{LONG}", "-k", "rotation or resuming_an_older"],
    ),
    Fault(
        "shared-run-directory",
        "ppo_discrete.py",
        'os.makedirs(f"runs/{run_name}", exist_ok=checkpoint is not None)',
        'os.makedirs(f"runs/{run_name}", exist_ok=True)',
        ["tests/test_faults.py::test_runs_started_in_the_same_second_get_their_own_directories"],
    ),
    Fault(
        "tmp-left-behind",
        "ppo_discrete.py",
        '                if os.path.exists(f"{path}.tmp"):\n                    os.remove(f"{path}.tmp")',
        "                pass",
        ["tests/test_faults.py", "-k", "full_disk and discrete"],
    ),
    Fault(
        "evaluation-ignores-signals",
        "ppo_continuous.py",
        "self.evaluating, video_folder = True,",
        "self.evaluating, video_folder = False,",
        ["tests/test_faults.py", "-k", "evaluation_after_training and continuous"],
    ),
    Fault(
        "eval-checkpoint-ignores-signals",
        "ppo_atari.py",
        "    signal.signal(signal.SIGTERM, stop_at_once)\n",
        "",
        ["tests/test_faults.py", "-k", "eval_checkpoint_at_once and atari"],
    ),
    Fault(
        "box-action-flat",
        "ppo_continuous.py",
        "envs.step(action.reshape(1, *space.shape))",
        "envs.step(action)",
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
        'rng["cuda"] = torch.cuda.get_rng_state()',
        "pass",
        ["tests/test_faults.py", "-k", "cuda_rng and discrete"],
    ),
    Fault(
        "shape-mismatch-traceback",
        "ppo_continuous.py",
        "except (RuntimeError, ValueError, KeyError, TypeError) as e:",
        "except KeyError as e:",
        [LONG, "-k", "malformed and wrong-shape and continuous"],
    ),
    Fault(
        "no-memory-check",
        "ppo_discrete.py",
        "        if self.rollout_bytes > memory:",
        "        if False:",
        ["tests/test_cli.py", "-k", "1000000000000 and ppo_discrete"],
    ),
    Fault(
        "inf-learning-rate",
        "ppo_continuous.py",
        "if not (in_range and np.isfinite(value)):",
        "if not in_range:",
        ["tests/test_cli.py", "-k", "learning-rate and inf and ppo_continuous"],
    ),
    # promises of round two (tests/test_promises.py)
    Fault(
        "no-run-lock",
        "ppo_discrete.py",
        "            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
        "",
        [f"{PROMISES}::test_a_second_process_on_a_run_in_use_is_refused_and_a_killed_one_lets_go"],
    ),
    Fault(
        "stale-summary-while-running",
        "ppo_discrete.py",
        'json.dump({"run": run_name, "ended": "running"}, f)',
        "pass  # the previous process's summary stays",
        [f"{PROMISES}::test_a_second_process_on_a_run_in_use_is_refused_and_a_killed_one_lets_go"],
    ),
    Fault(
        "summary-with-infinity",
        "ppo_discrete.py",
        "json.dump(json.loads(json.dumps(summary), parse_constant=lambda _: None), f, indent=2)",
        "json.dump(summary, f, indent=2)",
        [f"{PROMISES}::test_summary_is_valid_json_when_a_return_is_not_finite"],
    ),
    Fault(
        "totals-restart-on-resume",
        "ppo_discrete.py",
        'saved.get("episodes", 0)',
        "0",
        [f"{PROMISES}::test_summary_totals_go_on_across_resumptions_and_hold_the_flags"],
    ),
    Fault(
        "writer-thread-traceback",
        "ppo_discrete.py",
        "        threading.excepthook = lambda hook: None if issubclass(hook.exc_type, OSError) else self.excepthook(hook)\n",
        "",
        [f"{PROMISES}::test_a_real_file_size_limit_stops_the_run_in_one_line[tensorboard]"],
    ),
    Fault(
        "save-error-traceback",
        "ppo_discrete.py",
        'raise OSError(getattr(e, "errno", None), reason, path) from None',
        "raise",
        [f"{PROMISES}::test_a_real_file_size_limit_stops_the_run_in_one_line[checkpoint]"],
    ),
    Fault(
        "memory-check-ignores-ulimit",
        "ppo_atari.py",
        "memory = min(memory, resource.getrlimit(resource.RLIMIT_AS)[0] % 2**64)",
        "memory = memory",
        [f"{PROMISES}::test_the_memory_check_counts_the_network_and_a_process_limit"],
    ),
    Fault(
        "continue-line-unquoted",
        "ppo_discrete.py",
        "shlex.join([sys.argv[0], '--resume', self.last_checkpoint])",
        "' '.join([sys.argv[0], '--resume', self.last_checkpoint])",
        [f"{PROMISES}::test_the_printed_continue_line_runs_as_printed"],
    ),
    Fault(
        "batch-shares-frames",
        "ppo_atari.py",
        "obs = rollout.obs.flatten(0, 1).clone(memory_format=layout)",
        "obs = rollout.obs.flatten(0, 1).contiguous(memory_format=layout)",
        [f"{PROMISES}::test_a_batch_kept_past_the_next_rollout_stays_as_it_was[ppo_atari.py]"],
    ),
    Fault(
        "episodic-life-ignores-game-over",
        "ppo_atari.py",
        "            if terminated or truncated:  # the no-op step ended the game: reset it (as SB3 does)\n                obs, info = self.env.reset(**kwargs)\n",
        "",
        ["tests/test_atari.py::test_episodic_life_resets_a_game_its_noop_step_ends"],
    ),
    # forks (tests/test_fork.py)
    Fault(
        "rollout-off-policy",
        "ppo_discrete.py",
        "= action, logprob.cpu(), value.cpu()",
        "= action, (logprob * 1.001).cpu(), value.cpu()  # as a hand-written copy of the network that drifted",
        ["tests/test_fork.py", "-k", "on_policy and relu"],
    ),
    Fault(
        "loop-needs-run-control",
        "ppo_discrete.py",
        "    for iteration in range(state.iteration + 1, num_iterations + 1):",
        '    claim_run_dir("the loop")\n    for iteration in range(state.iteration + 1, num_iterations + 1):',
        ["tests/test_fork.py", "-k", "without_run_control and discrete"],
    ),
    Fault(
        "private-torch-api",
        "ppo_atari.py",
        "grad_norm = nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)",
        "grad_norm = torch.nn.utils.clip_grad._clip_grads_with_norm_ and nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)",
        ["tests/test_fork.py", "-k", "public"],
    ),
    Fault(
        "main-keeps-its-handler",
        "ppo_continuous.py",
        "        signal.signal(signal.SIGINT, self.restore[0])\n",
        "",
        ["tests/test_fork.py", "-k", "in_process and continuous"],
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
