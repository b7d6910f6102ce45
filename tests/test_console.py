"""The console: a live line rewritten in place on a terminal, about 20 plain lines in a log."""

import os
import pty
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_script

# 64 iterations of 16 steps: enough to see the log printing only every few iterations
FLAGS = {
    "ppo_discrete.py": [],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1", "--num-minibatches", "2", "--update-epochs", "1"],
    "ppo_atari.py": ["--num-minibatches", "2", "--update-epochs", "1"],
}
BUDGET = ["--num-envs", "1", "--num-steps", "16", "--total-timesteps", "1024"]


@pytest.mark.parametrize("script", FLAGS)
def test_live_line_on_a_terminal(tmp_path, script):
    terminal, child_side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / script), *BUDGET, *FLAGS[script]],
        cwd=tmp_path,
        stdout=child_side,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    os.close(child_side)
    output = b""
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # the child closed its side
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=300) == 0
    text = output.decode(errors="replace")
    # one line per iteration, each rewritten in place (the terminal shows "\n" as "\r\n")
    assert len(re.findall(r"\r(?!\n)", text)) == 64 and "step 1024/1024 (100%)" in text and "ETA" in text


@pytest.mark.parametrize("script", FLAGS)
def test_plain_periodic_lines_in_a_log(tmp_path, script):
    run = run_script(script, *BUDGET, *FLAGS[script], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("step ")]
    assert 20 <= len(lines) <= 22 and "\r" not in run.stdout
    assert lines[-1].startswith("step 1024/1024 (100%)")
