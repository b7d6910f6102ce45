"""Golden scalars: short fixed-seed runs must log what they logged when these files were written.

A change meant to keep behaviour (a refactor, a speed-up) keeps every logged scalar; one that changes the
algorithm on purpose regenerates the files (`python tests/test_golden.py`) and says so. The tolerance
absorbs the rounding differences between CPU kinds, not a change of the algorithm.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = {
    "discrete": ["ppo_discrete.py", "--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "128"],
    "discrete_recurrent_kl_penalty": [
        "ppo_discrete.py",
        "--total-timesteps",
        "1024",
        "--num-envs",
        "2",
        "--num-steps",
        "128",
        "--recurrent",
        "--num-minibatches",
        "2",
        "--loss",
        "kl-penalty",
    ],
    "continuous": [
        "ppo_continuous.py",
        "--env-id",
        "Pendulum-v1",
        "--total-timesteps",
        "1024",
        "--num-envs",
        "2",
        "--num-steps",
        "256",
    ],
    "atari_ale": [
        "ppo_atari.py",
        "--env-id",
        "PongNoFrameskip-v4",
        "--env-backend",
        "ale",
        "--total-timesteps",
        "512",
        "--num-envs",
        "2",
        "--num-steps",
        "128",
    ],
}
UNTIMED = ("time/", "charts/SPS")  # wall-clock quantities differ from run to run


def logged_scalars(cwd: Path, flags: list[str]) -> dict[str, list[list[float]]]:
    """Run a script in `cwd` -> every scalar it logged (tag -> [[step, value], ...]), timings aside."""
    subprocess.run(
        [sys.executable, str(ROOT / flags[0]), *flags[1:], "--exp-name", "golden"],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (run,) = (cwd / "runs").iterdir()
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [[event.step, event.value] for event in events.Scalars(tag)]
        for tag in sorted(events.Tags()["scalars"])
        if not tag.startswith(UNTIMED)
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_logged_scalars_match_the_golden_file(case, tmp_path):
    expected = json.loads((GOLDEN / f"{case}.json").read_text())
    logged = logged_scalars(tmp_path, CASES[case])
    assert sorted(logged) == sorted(expected), "the logged tags changed"
    for tag, points in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], f"{tag}: the logged steps changed"
        values, golden = [value for _, value in logged[tag]], [value for _, value in points]
        assert values == pytest.approx(golden, rel=1e-3, abs=1e-5), f"{tag} changed"


if __name__ == "__main__":  # regenerate the golden files after a deliberate change of behaviour
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    for name, flags in CASES.items():
        with tempfile.TemporaryDirectory() as cwd:
            (GOLDEN / f"{name}.json").write_text(json.dumps(logged_scalars(Path(cwd), flags), indent=0) + "\n")
        print(f"wrote tests/golden/{name}.json")
