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
EVERY = "tests/test_eval_every.py"
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
        "worker-teardown",
        "ppo_discrete.py",
        'and (code == 2) != bool(os.environ.get("LOCAL_RANK")):',
        'and code == 2 and not os.environ.get("LOCAL_RANK"):',
        ["tests/test_distributed.py", "-k", "without_the_interpreter_teardown"],
    ),
    Fault(
        "bad-input-waits-for-exit-hooks",
        "ppo_discrete.py",
        'and (code == 2) != bool(os.environ.get("LOCAL_RANK")):',
        'and code != 2 and bool(os.environ.get("LOCAL_RANK")):',
        ["tests/test_tracking.py::test_track_ends_without_waiting_for_a_stuck_w_and_b_service"],
    ),
    Fault(
        "own-env-module-not-found",
        "ppo_discrete.py",
        "    sys.path.insert(1, os.getcwd())",
        "    pass",
        ["tests/test_own_envs.py::test_a_module_in_the_working_directory_registers_its_env"],
    ),
    Fault(
        "env-kwargs-as-strings",
        "ppo_continuous.py",
        "            kwargs[key] = ast.literal_eval(value)",
        "            kwargs[key] = value",
        ["tests/test_own_envs.py::test_env_kwargs_are_python_literals_or_else_strings[ppo_continuous]"],
    ),
    Fault(
        "env-kwargs-not-evaluated",
        "ppo_continuous.py",
        'env_kwargs=saved.get("env_kwargs", ()), num_envs=1)',
        "num_envs=1)",
        [
            "tests/test_own_envs.py::test_env_kwargs_reach_training_evaluation_and_the_checkpoint[ppo_continuous.py-Pendulum-v1]"
        ],
    ),
    Fault(
        "help-without-docstring",
        "ppo_continuous.py",
        "tyro.cli(groups, description=__doc__, config=(tyro.conf.OmitArgPrefixes,))",
        "tyro.cli(groups, config=(tyro.conf.OmitArgPrefixes,))",
        ["tests/test_cli.py::test_help_lists_every_flag_with_an_explanation[ppo_continuous.py]"],
    ),
    Fault(
        "aggregate-mean-not-iqm",
        "benchmarks/aggregate.py",
        "return float(scores[cut : len(scores) - cut].mean())",
        "return float(scores.mean())",
        ["tests/test_benchmarks.py::test_aggregate_iqm_and_its_stratified_bootstrap_interval"],
    ),
    Fault(
        "eval-json-not-written",
        "ppo_discrete.py",
        """write_json(args.eval_json or f"{path.removesuffix('.pt')}.eval.json", result)""",
        "pass",
        ["tests/test_long_runs.py::test_evaluation_reproduces_the_saved_model[ppo_discrete.py]"],
    ),
    Fault(
        "positional-env-id-not-caught",
        "ppo_atari.py",
        'if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):',
        "if False:",
        ["tests/test_cli.py", "-k", "CartPole-v1 and atari and bad_input"],
    ),
    Fault(
        "mujoco-gl-forced",
        "ppo_continuous.py",
        'os.environ.setdefault("MUJOCO_GL", "egl")',
        'os.environ["MUJOCO_GL"] = "egl"',
        ["tests/test_continuous.py::test_a_video_renders_with_the_users_mujoco_gl"],
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
        '                os.path.exists(f"{path}.tmp") and os.remove(f"{path}.tmp")',
        "                pass",
        ["tests/test_faults.py", "-k", "full_disk and discrete"],
    ),
    Fault(
        "evaluation-ignores-signals",
        "ppo_continuous.py",
        "self.evaluating, seed, path = True,",
        "self.evaluating, seed, path = False,",
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
        "except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:",
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
        'write_json(f"runs/{run_name}/summary.json", {"run": run_name, "ended": "running"})',
        "pass  # the previous process's summary stays",
        [f"{PROMISES}::test_a_second_process_on_a_run_in_use_is_refused_and_a_killed_one_lets_go"],
    ),
    Fault(
        "summary-with-infinity",
        "ppo_discrete.py",
        "json.dump(json.loads(json.dumps(obj), parse_constant=lambda _: None), f, indent=2)",
        "json.dump(obj, f, indent=2)",
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
        "            self.game_over = terminated or truncated  # the no-op step ended the game: reset it (as SB3 does)\n",
        "",
        ["tests/test_atari.py::test_episodic_life_resets_a_game_its_noop_step_ends"],
    ),
    Fault(
        "ale-wrappers-on-every-env",
        "ppo_atari.py",
        '    ale = hasattr(env.unwrapped, "ale")',
        "    ale = True",
        ["tests/test_atari.py::test_the_ale_only_wrappers_wrap_ale_games_only"],
    ),
    Fault(
        "game-scores-need-lives",
        "ppo_atari.py",
        '        lives = info.get("lives", self.lives)',
        '        lives = info["lives"]',
        ["tests/test_learning.py::test_atari_script_on_an_image_env_outside_the_ale"],
    ),
    Fault(
        "atari-env-kwargs-ignored",
        "ppo_atari.py",
        '    for key, _, value in (pair.partition("=") for pair in args.env_kwargs):',
        '    for key, _, value in (pair.partition("=") for pair in ()):',
        ["tests/test_cli.py", "-k", "no_such_kwarg and ppo_atari"],
    ),
    Fault(
        "atari-takes-feature-envs",
        "ppo_atari.py",
        "and space.dtype == np.uint8 and len(space.shape) >= 2):  # features",
        "or True):  # features",
        ["tests/test_cli.py", "-k", "CartPole and ppo_atari"],
    ),
    Fault(
        "ale-backend-on-any-env",
        "ppo_atari.py",
        'if args.env_backend == "ale" and (not ale or args.env_kwargs or args.capture_video):',
        'if args.env_backend == "ale" and (args.env_kwargs or args.capture_video):',
        ["tests/test_cli.py", "-k", "BrightOrDark and ale"],
    ),
    Fault(
        "help-in-one-box",
        "ppo_continuous.py",
        "    flags = tyro.cli(groups, description=__doc__, config=(tyro.conf.OmitArgPrefixes,))",
        "    flags = groups(*[tyro.cli(kind, description=__doc__) for kind in (AlgorithmArgs, RunControlArgs)])",
        ["tests/test_cli.py", "-k", "help_lists_every_flag"],
    ),
    Fault(
        "atari-records-what-does-not-render",
        "ppo_atari.py",
        '    if args.capture_video and "rgb_array" not in env.metadata.get("render_modes", []):',
        "    if False:",
        ["tests/test_cli.py", "-k", "UnrenderedBrightOrDark"],
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
        "            signal.signal(signum, handler)\n",
        "            pass\n",
        ["tests/test_fork.py", "-k", "in_process and continuous"],
    ),
]


# ---- Details switched off (the flag still parses): each detail of the detail maps, at its default or when asked for
REF = "tests/test_losses.py::test_one_update_step_is_the_reference_ppo_step_and_logs_its_debug_variables"
GOLDEN = "tests/test_golden.py::test_logged_scalars_match_the_golden_file"
SMOKE = "tests/test_smoke.py"
SCRIPTS = {"ppo_discrete.py": "discrete", "ppo_continuous.py": "continuous", "ppo_atari.py": "atari_ale"}
PER_SCRIPT = [  # name, old, new, tests ({module}, {golden}: the script's); in each script's own loop
    (
        "d1-same-env-seeds",
        "envs.reset(seed=args.seed + (rank + world_size * state.iteration) * args.num_envs)",
        "envs.reset(seed=[args.seed + (rank + world_size * state.iteration) * args.num_envs] * args.num_envs)",
        ["{golden}"],
    ),
    ("d3-torch-adam-eps", "eps=args.adam_eps, fused=True)", "eps=1e-8, fused=True)", ["{golden}"]),
    (
        "d4-lr-not-annealed",
        "lr_now = frac * args.learning_rate if args.anneal_lr else args.learning_rate",
        "lr_now = args.learning_rate",
        [SMOKE, "-k", "defaults_anneal and {module}"],
    ),
    ("d6-no-shuffle", "        np.random.shuffle(order)\n", "        pass\n", ["{golden}"]),
    ("d6-one-epoch", "for _epoch in range(args.update_epochs):", "for _epoch in range(1):", ["{golden}"]),
    ("d7-no-norm-adv", "if args.norm_adv:  # detail 7", "if False:  # detail 7", [REF + "[{module}]"]),
    (
        "d10-no-entropy-bonus",
        "loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss",
        "loss = pg_loss + args.vf_coef * v_loss",
        [REF + "[{module}]"],
    ),
    (
        "d10-no-vf-coef",
        "loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss",
        "loss = pg_loss - args.ent_coef * entropy_loss + v_loss",
        [REF + "[{module}]"],
    ),
    (
        "d11-no-grad-clip",
        "clip_grad_norm_(parameters, args.max_grad_norm)",
        'clip_grad_norm_(parameters, float("inf"))',
        [REF + "[{module}]"],
    ),
    (
        "d12-kl-estimator",
        "approx_kl = all_mean_(((ratio - 1) - logratio).mean())",
        "approx_kl = all_mean_((-logratio).mean())",
        [REF + "[{module}]"],
    ),
    (
        "d12-clipfrac",
        "clipfracs.append(((ratio - 1.0).abs() > clip_coef)",
        "clipfracs.append(((ratio - 1.0).abs() > 2 * clip_coef)",
        [REF + "[{module}]"],
    ),
    (
        "aux-target-kl-epoch",
        'args.kl_stop == "epoch" and approx_kl > args.target_kl):',
        'args.kl_stop == "epoch" and approx_kl > 1e9):',
        [SMOKE, "-k", "stops_after_the_epoch and {module}"],
    ),
    (
        "aux-target-kl-minibatch",
        "approx_kl > 1.5 * args.target_kl:",
        "approx_kl > 1e9:",
        [SMOKE, "-k", "before_a_minibatch_step and {module}"],
    ),
    (
        "aux-anneal-clip-logged-only",
        "clip_now = frac * args.clip_coef if args.anneal_clip else args.clip_coef",
        "clip_now = args.clip_coef",
        [SMOKE, "-k", "test_anneal_clip and {module}"],
    ),
    (
        "aux-anneal-clip-not-used",
        "args, clip_now, state.kl_coef)",
        "args, args.clip_coef, state.kl_coef)",
        [SMOKE, "-k", "test_anneal_clip and {module}"],
    ),
    (
        "aux-kl-coef-not-adapted",
        'state.kl_coef = adapt_kl_coef(state.kl_coef, logs["losses/kl_after_update"], args.kl_target)',
        "pass",
        [SMOKE, "-k", "kl_penalty_adapts_beta and {module}"],
    ),
]
D, C, A = "ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"
LOSSES, TESTS_C, TESTS_A, RECURRENT = (
    "tests/test_losses.py",
    "tests/test_continuous.py",
    "tests/test_atari.py",
    "tests/test_recurrent.py",
)
FAULTS += [
    Fault(
        f"{script[4]}-{name}",
        script,
        old,
        new,
        [t.format(module=script[:-3], golden=f"{GOLDEN}[{case}]") for t in tests],
    )
    for script, case in SCRIPTS.items()
    for name, old, new, tests in PER_SCRIPT
] + [
    Fault(
        "d2-default-init",
        D,
        "    if ortho:\n        nn.init.orthogonal_(layer.weight, std)",
        "    if False:\n        nn.init.orthogonal_(layer.weight, std)",
        [f"{LOSSES}::test_orthogonal_init_and_shared_trunk"],
    ),
    Fault(
        "d5-no-lambda",
        D,
        "decays = gamma * gae_lambda * (1 - ended)",
        "decays = gamma * (1 - ended)",
        ["tests/test_gae.py", "-k", "ppo_discrete"],
    ),
    Fault(
        "d8-unclipped-objective",
        D,
        "    return torch.max(unclipped, clipped).mean()\n\n\ndef kl_pen",
        "    return unclipped.mean()\n\n\ndef kl_pen",
        [LOSSES, "-k", "clipped_objective and ppo_discrete"],
    ),
    Fault(
        "d9-value-unclipped",
        D,
        "    if not clip_vloss:\n",
        "    if True:\n",
        [LOSSES, "-k", "value_loss and ppo_discrete"],
    ),
    Fault(
        "d12-explained-variance",
        D,
        "float(1 - np.var(y_true - y_pred) / var_y)",
        "float(np.var(y_pred) / var_y)",
        [f"{GOLDEN}[discrete]"],
    ),
    Fault(
        "d13-always-shared",
        D,
        "self.critic_trunk = self.actor_trunk if shared_network else trunk()",
        "self.critic_trunk = self.actor_trunk",
        [f"{GOLDEN}[discrete]"],
    ),
    Fault(
        "d13-never-shared",
        D,
        "self.critic_trunk = self.actor_trunk if shared_network else trunk()",
        "self.critic_trunk = trunk()",
        [f"{LOSSES}::test_orthogonal_init_and_shared_trunk"],
    ),
    Fault(
        "d32-lstm-default-init",
        D,
        "    if ortho:\n        for name, param in lstm.named_parameters():",
        "    if False:\n        for name, param in lstm.named_parameters():",
        [RECURRENT, "-k", "lstm_init and ppo_discrete"],
    ),
    Fault(
        "d33-nonzero-start",
        D,
        "return torch.zeros(shape, device=device), torch.zeros(shape, device=device)",
        "return torch.full(shape, 0.5, device=device), torch.full(shape, 0.5, device=device)",
        [RECURRENT, "-k", "starts_at_zero and ppo_discrete"],
    ),
    Fault(
        "d34-no-reset",
        D,
        "keep = (1.0 - starts[first]).view(1, -1, 1)",
        "keep = torch.ones_like(starts[first]).view(1, -1, 1)",
        [RECURRENT, "-k", "resets and ppo_discrete"],
    ),
    Fault(
        "d35-broken-sequences",
        D,
        "yield part, (np.arange(num_steps)[:, None] * num_envs + part).reshape(-1)",
        "yield part, (np.arange(num_steps)[:, None] * num_envs + part).T.reshape(-1)",
        [RECURRENT, "-k", "whole_env_sequences and ppo_discrete"],
    ),
    Fault(
        "d36-zero-state-in-update",
        D,
        "mb_state = select_envs(lstm_state, mb_envs)",
        "mb_state = select_envs(agent.initial_state(args.num_envs), mb_envs)",
        [RECURRENT, "-k", "ratio_is_one and ppo_discrete"],
    ),
    Fault(
        "d37-last-component-only",
        D,
        "logprob = logprob + log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)",
        "logprob = log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)",
        [f"{LOSSES}::test_multidiscrete_logprob_and_entropy_are_sums_of_the_components"],
    ),
    Fault(
        "aux-kl-penalty-term",
        D,
        "    return -(advantages * ratio).mean() + kl_coef * kl",
        "    return -(advantages * ratio).mean()",
        [LOSSES, "-k", "kl_penalty and ppo_discrete"],
    ),
    Fault(
        "aux-masking-off",
        D,
        "            logits = mask_logits(logits, action_mask)",
        "            pass",
        ["tests/test_learning.py::test_action_masking"],
    ),
    Fault(
        "ours-no-bootstrap",
        D,
        "if args.bootstrap_truncation and time_limited.any():",
        "if False and time_limited.any():",
        [SMOKE, "-k", "changes_training and ppo_discrete and no-bootstrap"],
    ),
    Fault(
        "c23-uniform-noise",
        C,
        "action = mean + logstd.exp() * torch.randn_like(mean)",
        "action = mean + logstd.exp() * (torch.rand_like(mean) - 0.5)",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "c24-logstd-frozen",
        C,
        "self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))",
        "self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim), requires_grad=False)",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "c25-mean-not-sum",
        C,
        "return logprob.sum(-1), entropy.sum(-1)",
        "return logprob.mean(-1), entropy.mean(-1)",
        [f"{TESTS_C}::test_gaussian_logprob_and_entropy_match_torch_distributions"],
    ),
    Fault(
        "c26-always-shared",
        C,
        "self.critic_trunk = self.actor_trunk if shared_network else trunk()",
        "self.critic_trunk = self.actor_trunk",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "c27-no-action-clip",
        C,
        "return np.clip(actions, low, high) if clip_action else actions",
        "return actions",
        [f"{SMOKE}::test_clip_action_sends_clipped_actions_and_trains_on_the_unclipped_ones"],
    ),
    Fault(
        "c27-stores-clipped",
        C,
        "        env_action = env_actions(action.cpu().numpy(), low, high, args.clip_action)\n",
        "        env_action = env_actions(action.cpu().numpy(), low, high, args.clip_action)\n"
        "        rollout.actions[step] = torch.as_tensor(env_action, device=device)\n",
        [f"{SMOKE}::test_clip_action_sends_clipped_actions_and_trains_on_the_unclipped_ones"],
    ),
    Fault(
        "c28-obs-not-normalised",
        C,
        "obs = normalize_obs(raw_obs, self.obs_rms, self.args.clip_obs)",
        "obs = normalize_obs(raw_obs, None, self.args.clip_obs)",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "c28-statistics-frozen", C, "if self.obs_rms is not None and update:", "if False:", [f"{GOLDEN}[continuous]"]
    ),
    Fault(
        "c28-final-obs-not-counted",
        C,
        "        if len(final_obs):\n            self.obs_rms.update(final_obs)",
        "        pass",
        [SMOKE, "-k", "changes_training and norm-obs-final"],
    ),
    Fault(
        "c28-one-hot-normalised",
        C,
        "            self.obs_rms.mean[self.not_box], self.obs_rms.var[self.not_box] = 0.0, 1.0",
        "            pass",
        [f"{TESTS_C}::test_norm_obs_leaves_one_hot_features_as_they_are"],
    ),
    Fault(
        "c28-tuple-parts-not-box",
        C,
        "    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):",
        "    if isinstance(space, gym.spaces.Dict):",
        [f"{TESTS_C}::test_box_features_are_the_flattened_positions_of_box_parts"],
    ),
    Fault(
        "c29-no-obs-clip",
        C,
        "return np.clip(normalized, -clip_obs, clip_obs) if clip_obs > 0 else normalized",
        "return normalized",
        [f"{TESTS_C}::test_normalize_obs_clips_and_is_identity_without_statistics"],
    ),
    Fault(
        "c30-no-reward-scaling",
        C,
        "scaled = rewards / np.sqrt(self.return_rms.var + 1e-8)",
        "scaled = rewards",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "c31-no-reward-clip",
        C,
        "return np.clip(scaled, -self.clip_reward, self.clip_reward) if self.clip_reward > 0 else scaled",
        "return scaled",
        [f"{TESTS_C}::test_reward_clipping"],
    ),
    Fault(
        "c-no-bootstrap",
        C,
        "if args.bootstrap_truncation and time_limited.any():",
        "if False and time_limited.any():",
        [f"{GOLDEN}[continuous]"],
    ),
    Fault(
        "a2-default-init",
        A,
        "    if ortho:\n        nn.init.orthogonal_(layer.weight, std)",
        "    if False:\n        nn.init.orthogonal_(layer.weight, std)",
        [f"{GOLDEN}[atari_ale]"],
    ),
    Fault(
        "a14-no-noops",
        A,
        "for _ in range(self.unwrapped.np_random.integers(1, self.noop_max + 1)):",
        "for _ in range(0):",
        [TESTS_A, "-k", "noop"],
    ),
    Fault("a14-ale-no-noops", A, '"noop_max": args.noop_max}', '"noop_max": 0}', [f"{GOLDEN}[atari_ale]"]),
    Fault(
        "a15-no-skip",
        A,
        "    if args.frame_skip > 1:  # detail 15",
        "    if False:  # detail 15",
        [TESTS_A, "-k", "full_stack"],
    ),
    Fault(
        "a16-no-life-loss",
        A,
        "terminated, self.lives = terminated or 0 < lives < self.lives, lives",
        "terminated, self.lives = terminated, lives",
        [TESTS_A, "-k", "episodic_life"],
    ),
    Fault(
        "a16-ale-no-life-loss",
        A,
        '"life_loss_info": args.episodic_life',
        '"life_loss_info": False',
        [TESTS_A, "-k", "agree and ale"],
    ),
    Fault("a17-no-fire", A, "        for action in (1, 2):", "        for action in (0, 0):", [TESTS_A, "-k", "fire"]),
    Fault(
        "a17-ale-no-fire",
        A,
        '"use_fire_reset": args.fire_reset',
        '"use_fire_reset": False',
        [TESTS_A, "-k", "launches and ale"],
    ),
    Fault(
        "a18-nearest-resize",
        A,
        "interpolation=cv2.INTER_AREA",
        "interpolation=cv2.INTER_NEAREST",
        [TESTS_A, "-k", "backends_match"],
    ),
    Fault(
        "a19-no-sign",
        A,
        "reward = np.clip(raw_reward, -args.clip_reward, args.clip_reward) if args.clip_reward > 0 else raw_reward",
        "reward = raw_reward",
        [TESTS_A, "-k", "sign"],
    ),
    Fault(
        "a20-zero-padding",
        A,
        "    return gym.wrappers.FrameStackObservation(env, args.frame_stack)",
        "    return gym.wrappers.FrameStackObservation(env, args.frame_stack, padding_type='zero')",
        [TESTS_A, "-k", "full_stack"],
    ),
    Fault(
        "a21-never-shared",
        A,
        "self.critic_trunk = self.actor_trunk if self.shared_network else trunk()",
        "self.critic_trunk = trunk()",
        [f"{GOLDEN}[atari_ale]"],
    ),
    Fault(
        "a22-no-scale",
        A,
        "return x.float() / 255.0 if self.scale_obs else x.float()",
        "return x.float()",
        [f"{TESTS_A}::test_scale_obs_scales_inside_the_network"],
    ),
]


FAULTS += [  # issue 25's promises kept in this round
    Fault(
        "crafted-types-unchecked",
        "ppo_discrete.py",
        'odd += [f"type of {k}" for k in kinds if not odd and not isinstance(checkpoint.get(k, kinds[k]()), kinds[k])]',
        "pass",
        [PROMISES, "-k", "crafted_checkpoint and (rng or global_step or returns)"],
    ),
    Fault(
        "crafted-counts-unchecked",
        "ppo_discrete.py",
        'odd += [f"{key} < 0" for key in ("global_step", "iteration", "episodes") if not odd and checkpoint.get(key, 0) < 0]',
        "pass",
        [PROMISES, "-k", "crafted_checkpoint and iteration"],
    ),
    Fault(
        "crafted-run-name-unchecked",
        "ppo_discrete.py",
        'odd += [] if odd or checkpoint["run_name"].strip(".") and "/" not in checkpoint["run_name"] else ["run_name"]',
        "pass",
        [PROMISES, "-k", "crafted_checkpoint and run_name"],
    ),
    Fault(
        "non-finite-weights-loaded",
        "ppo_discrete.py",
        'odd += [] if odd else [f"{where} not finite" for where in [first_non_finite(checkpoint)] if where]',
        "pass",
        [PROMISES, "-k", "crafted_checkpoint and nan"],
    ),
    Fault(
        "crafted-flag-type-warned",
        "ppo_discrete.py",
        'odd += [str(w.message).split(". ")[0] for w in caught if "is annotated with type" in str(w.message)]',
        "pass",
        [PROMISES, "-k", "crafted_flag_value"],
    ),
    Fault(
        "wandb-error-traceback",
        "ppo_discrete.py",
        "        except wandb.errors.Error as e:",
        "        except ImportError as e:",
        ["tests/test_tracking.py", "-k", "no_server"],
    ),
    Fault(
        "ctrl-c-at-import-traceback",
        "ppo_discrete.py",
        "    signal.signal(signal.SIGINT, signal.SIG_DFL)\n",
        "    pass\n",
        [PROMISES, "-k", "ctrl_c"],
    ),
    Fault(
        "ram-bytes-unscaled",
        "ppo_discrete.py",
        "        if args.scale_obs and space.dtype == np.uint8 and np.all(space.high == 255):",
        "        if False:",
        ["tests/test_smoke.py::test_ram_bytes_reach_the_network_scaled_to_0_1"],
    ),
    # issue 26: evaluation during training (--eval-every) and the best model
    Fault(
        "eval-every-never",
        "ppo_discrete.py",
        "evaluate_now = self.args.eval_every and state.iteration % self.args.eval_every == 0 and not self.stopping",
        "evaluate_now = False",
        [f"{EVERY}::test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept[ppo_discrete.py]"],
    ),
    Fault(
        "best-not-kept",
        "ppo_continuous.py",
        '(result := self.evaluate(state.global_step))["mean"] > self.best:',
        '(result := self.evaluate(state.global_step))["mean"] > np.inf:',
        [f"{EVERY}::test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept[ppo_continuous.py]"],
    ),
    Fault(
        "best-always-replaced",
        "ppo_atari.py",
        '(result := self.evaluate(state.global_step))["mean"] > self.best:',
        '(result := self.evaluate(state.global_step))["mean"] > -np.inf:',
        [f"{EVERY}::test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept[ppo_atari.py]"],
    ),
    Fault(
        "best-overwritten-on-resume",
        "ppo_discrete.py",
        'self.best = float(json.load(f)["mean"])',
        "pass",
        [f"{EVERY}::test_a_resumed_run_keeps_a_better_best_model"],
    ),
    Fault(
        "evaluation-draws-training-rng",
        "ppo_discrete.py",
        "    with torch.random.fork_rng(devices=[]):  # a new network draws its weights: the caller's RNG is left as it was\n        agent",
        "    if True:\n        agent",
        [f"{EVERY}::test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept[ppo_discrete.py]"],
    ),
    Fault(
        "evaluation-draws-training-rng-atari",
        "ppo_atari.py",
        "    with torch.random.fork_rng(devices=[]):  # a new network draws its weights: the caller's RNG is left as it was\n        agent",
        "    if True:\n        agent",
        [f"{EVERY}::test_the_model_is_evaluated_every_n_iterations_and_the_best_is_kept[ppo_atari.py]"],
    ),
    Fault(
        "periodic-evaluation-ignores-signals",
        "ppo_atari.py",
        "self.evaluating, seed, path = True,",
        "self.evaluating, seed, path = False,",
        ["tests/test_faults.py", "-k", "periodic_evaluation_at_once and atari"],
    ),
    Fault(
        "every-rank-evaluates",
        "ppo_discrete.py",
        "if evaluate_now and self.rank == 0 and",
        "if evaluate_now and",
        ["tests/test_distributed.py::test_workers_end_bit_identical[ppo_discrete.py]"],
    ),
    Fault(
        "negative-eval-every-accepted",
        "ppo_atari.py",
        'check_args(args, world_size, counts, positive, [*non_negative, "eval_every"])',
        "check_args(args, world_size, counts, positive, non_negative)",
        ["tests/test_cli.py", "-k", "eval-every and atari"],
    ),
    Fault(
        "recording-ignores-signals",
        "ppo_discrete.py",
        "cubic(episode) and not (signalled and signalled.is_set())",
        "cubic(episode)",
        [
            "tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_discrete.py-sync]",
            "tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_discrete.py-async]",
        ],
    ),
    Fault(
        "continuous-recording-ignores-signals",
        "ppo_continuous.py",
        "cubic(episode) and not (signalled and signalled.is_set())",
        "cubic(episode)",
        ["tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_continuous.py-async]"],
    ),
    Fault(
        "atari-recording-ignores-signals",
        "ppo_atari.py",
        "cubic(game) and not (signalled and signalled.is_set())",
        "cubic(game)",
        ["tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_atari.py-sync]"],
    ),
    Fault(
        "signal-not-shared-with-recorders",
        "ppo_discrete.py",
        "        self.signalled and self.signalled.set()  # a recording under way",
        "        self.signalled and self.signalled.clear()  # a recording under way",
        ["tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_discrete.py-async]"],
    ),
    Fault(
        "signalled-not-across-processes",
        "ppo_discrete.py",
        "self.signalled = multiprocessing.Event() if",
        "self.signalled = threading.Event() if",
        ["tests/test_faults.py::test_a_signal_begins_no_new_recording[ppo_discrete.py-async]"],
    ),
    Fault(
        "every-worker-records",
        "ppo_discrete.py",
        "if args.capture_video and self.rank == 0 else None",
        "if args.capture_video else None",
        ["tests/test_distributed.py::test_only_rank_0_records_video"],
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
