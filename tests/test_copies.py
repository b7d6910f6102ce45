"""The scripts share code by copy, so each stays one file a user can take; these copies must not drift.

Every function or class named in SHARED has the same source, byte for byte, in every script that defines it.
To change one, change it in every script that has it (the message names them).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]

ALL = set(SCRIPTS)
RECURRENT = {"ppo_discrete.py", "ppo_atari.py"}
SHARED = {
    # PPO math
    **dict.fromkeys(["compute_advantages", "clipped_policy_loss", "kl_penalty_policy_loss", "adapt_kl_coef"], ALL),
    **dict.fromkeys(["value_loss", "explained_variance", "layer_init", "all_mean_", "UsageError"], ALL),
    # recurrent policies (details 32-36)
    **dict.fromkeys(["lstm_init", "lstm_sequence", "select_envs", "minibatches"], RECURRENT),
    # run control: errors, workers, signals, checkpoint files, resume, logging, evaluation of a checkpoint
    **dict.fromkeys(["Run", "SignalStop", "stop_at_once", "check_args", "claim_run_dir", "first_non_finite"], ALL),
    **dict.fromkeys(["load_checkpoint", "load_state", "parse_args", "evaluate_checkpoint"], ALL),
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


def problems(name: str, definitions: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with the copies of `name`: scripts that miss it, scripts whose copy differs from the first."""
    copies = {script: definitions[script].get(name) for script in sorted(SHARED[name])}
    found = [
        f"{name} is missing from {script} (renamed? update tests/test_copies.py)"
        for script, source in copies.items()
        if source is None
    ]
    first, *others = copies
    return found + [
        f"{name} differs between {first} and {script}; make the copies equal"
        for script in others
        if copies[script] is not None and copies[script] != copies[first]
    ]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_definitions_are_identical(name):
    assert not problems(name, DEFINITIONS)


def test_a_changed_copy_is_caught():
    """The check can fail: one changed character in one copy, or a renamed copy, is reported."""
    changed = {**DEFINITIONS, "ppo_atari.py": dict(DEFINITIONS["ppo_atari.py"])}
    changed["ppo_atari.py"]["all_mean_"] += " * 1"
    assert problems("all_mean_", changed) == [
        "all_mean_ differs between ppo_atari.py and ppo_continuous.py; make the copies equal",
        "all_mean_ differs between ppo_atari.py and ppo_discrete.py; make the copies equal",
    ]
    del changed["ppo_atari.py"]["value_loss"]
    assert problems("value_loss", changed)[0].startswith("value_loss is missing from ppo_atari.py")


# Lines of each script (`wc -l`): in all; the reading path (the top to the end of `main`); run control (its banner on)
BUDGETS = {"ppo_discrete.py": (1250, 750, 450), "ppo_continuous.py": (1250, 750, 450), "ppo_atari.py": (1250, 900, 450)}
BANNER = "# ==== Run control"


def budget_overruns(source: str, budgets: tuple[int, int, int]) -> list[str]:
    lines = source.splitlines()
    reading = next(i for i, line in enumerate(lines) if line.startswith(BANNER))
    counts = dict(zip(["in all", "reading path", "run control"], [len(lines), reading, len(lines) - reading]))
    return [
        f"{part}: {count} lines > {limit}" for (part, count), limit in zip(counts.items(), budgets) if count > limit
    ]


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_stays_fork_sized(script):
    """A fork copies one file: what it adds is paid for by writing the rest plainly, not by growing the file."""
    assert not budget_overruns((ROOT / script).read_text(), BUDGETS[script])
    assert budget_overruns((ROOT / script).read_text() + "\n" * 451, BUDGETS[script])  # the check can fail


def test_every_fault_in_tests_faults_still_applies():
    # a fault whose text the code no longer has would test nothing: `python tests/faults.py` would not make it
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import faults

    stale = [f.name for f in faults.FAULTS if (ROOT / f.file).read_text().count(f.old) != 1]
    assert not stale, f"faults whose text is not exactly once in their file: {stale}"
    assert len({f.name for f in faults.FAULTS}) == len(faults.FAULTS), "two faults of one name"


def test_the_scripts_end_with_the_same_main_block():
    # how a script ends (one-line errors, signals, a torchrun worker's exit) is a copy too
    ends = {script: (ROOT / script).read_text().rsplit('\nif __name__ == "__main__":\n', 1)[1] for script in SCRIPTS}
    assert len(set(ends.values())) == 1, "the `if __name__ == '__main__':` blocks at the ends of the scripts differ"
