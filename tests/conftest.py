"""Fixtures shared by the tests: running a script as a user would, and reading what it logged."""

import glob
import importlib
import itertools
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from benchmarks.run import read_scalars

REPO = Path(__file__).resolve().parents[1]

# A few iterations of a tiny batch: enough to exercise every phase of the loop in seconds.
TINY = ["--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "64"]
# One Adam step per iteration, for Atari tests that check frames, episode accounting, files, schedules or seeds:
# those show from the first update on, and the Nature-CNN's 16 minibatch steps per iteration would be most of the
# time of a tiny Atari run
ONE_STEP = ["--update-epochs", "1", "--num-minibatches", "1"]


@pytest.fixture(params=["ppo_discrete", "ppo_continuous", "ppo_atari"])
def script(request):
    """Each script's module, for the pure functions every script carries its own copy of."""
    return importlib.import_module(request.param)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    cwd: Path

    @property
    def run_dir(self) -> str:
        (run_dir,) = glob.glob(str(self.cwd / "runs" / "*"))
        return run_dir

    def scalars(self, tag: str) -> list[float]:
        """Values logged under `tag`, in order."""
        return [value for _, value in read_scalars(self.run_dir, tag)]

    def steps(self, tag: str) -> list[int]:
        return [step for step, _ in read_scalars(self.run_dir, tag)]


def run_script(script: str, *flags: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> Run:
    """Run `python <script> <flags>` from `cwd` (its runs/ lands there), one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *flags], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, cwd)


def train_in(cwd: Path, script: str, *flags: str, env: dict | None = None) -> Run:
    """Run a script that must succeed; shows its stderr if it does not."""
    run = run_script(script, *flags, cwd=cwd, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


@pytest.fixture
def train(tmp_path):
    """train(script, *flags) -> Run, each call in a folder of its own."""
    counter = itertools.count()

    def _train(script: str, *flags: str, env: dict | None = None) -> Run:
        cwd = tmp_path / f"run{next(counter)}"
        cwd.mkdir()
        return train_in(cwd, script, *flags, env=env)

    return _train


ALE_BANNER = ("A.L.E: Arcade Learning Environment", "[Powered by Stella]")  # printed by ale-py as a game loads


@pytest.fixture
def run_fails(tmp_path):
    """run_fails(script, *flags) -> the one stderr line of a run that must reject its input with exit 2."""

    def _run_fails(script: str, *flags: str) -> str:
        run = run_script(script, *flags, cwd=tmp_path)
        assert run.returncode == 2, (run.returncode, run.stderr[-4000:])
        assert "Traceback" not in run.stderr, run.stderr
        lines = [line for line in run.stderr.strip().splitlines() if not line.startswith(ALE_BANNER)]
        assert len(lines) == 1, run.stderr
        assert not (tmp_path / "runs").exists(), "a rejected run must not create a run directory"
        return lines[0]

    return _run_fails


def assert_identical(a, b, where: str = "") -> None:
    """Bit-identical nested state: tensors, numbers, strings, lists and dicts of them."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where
