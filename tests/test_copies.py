"""The scripts share code by copy, so each stays one file a user can take; these copies must not drift.

Every function or class named in SHARED has the same source, byte for byte, in every script that defines it.
To change one, change it in every script that has it (the message names them).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]

ALL, MLP = set(SCRIPTS), {"ppo_discrete.py", "ppo_continuous.py"}
RECURRENT = {"ppo_discrete.py", "ppo_atari.py"}
SHARED = {
    # PPO math
    **dict.fromkeys(["compute_advantages", "clipped_policy_loss", "kl_penalty_policy_loss", "adapt_kl_coef"], ALL),
    **dict.fromkeys(["value_loss", "explained_variance", "layer_init"], ALL),
    # recurrent policies (details 32-36)
    **dict.fromkeys(["lstm_init", "lstm_sequence", "select_envs", "minibatches"], RECURRENT),
    # training loop pieces
    "EpisodeStats": MLP,
    # run control: errors, workers, signals, checkpoint files, resume checks, writers, evaluation, console
    **dict.fromkeys(["UsageError", "NonFiniteError", "WriteError", "SignalStop", "NullWriter"], ALL),
    **dict.fromkeys(["check_memory", "claim_run_dir", "stop_at_once", "format_seconds"], ALL),
    **dict.fromkeys(["setup_workers", "all_mean_", "average_gradients_", "broadcast_", "gather_objects"], ALL),
    **dict.fromkeys(["first_non_finite", "save_checkpoint", "load_checkpoint", "load_state"], ALL),
    **dict.fromkeys(["rotate_checkpoints", "check_resume_args", "rng_states", "set_rng_states"], ALL),
    **dict.fromkeys(["init_logging", "report_evaluation", "check_tracking", "upload_videos", "resume_defaults"], ALL),
    **dict.fromkeys(["Run", "print_status", "sigint_blocked", "evaluate_checkpoint"], ALL),
    "make_envs": MLP,
}
"""name -> the scripts that must each hold an identical copy of it."""


def definitions(script: str) -> dict[str, str]:
    """Top-level function and class definitions of a script: name -> source."""
    source = (ROOT / script).read_text()
    return {
        node.name: ast.get_source_segment(source, node)
        for node in ast.parse(source).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }


DEFINITIONS = {script: definitions(script) for script in SCRIPTS}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_definitions_are_identical(name):
    copies = {script: DEFINITIONS[script].get(name) for script in sorted(SHARED[name])}
    missing = [script for script, source in copies.items() if source is None]
    assert not missing, f"{name} is missing from {missing} (renamed? update tests/test_copies.py)"
    first, *others = copies
    for script in others:
        assert copies[script] == copies[first], f"{name} differs between {first} and {script}; make the copies equal"


def test_a_changed_copy_is_caught():
    """The comparison can fail: one changed character in one copy makes the sources differ."""
    source = (ROOT / "ppo_atari.py").read_text().replace("return flat[-1]", "return flat[-1] * 1", 1)
    node = next(n for n in ast.parse(source).body if getattr(n, "name", None) == "average_gradients_")
    assert ast.get_source_segment(source, node) != DEFINITIONS["ppo_discrete.py"]["average_gradients_"]
