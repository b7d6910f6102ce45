"""--track: Weights & Biases logging (offline here: no network), its videos, and a clear line without a login."""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, TINY, train_in


def refused_track_line(tmp_path, **wandb_env) -> str:
    """Run `ppo_discrete.py --track` with no W&B settings but `wandb_env` -> the one line it must stop with, exit 2,
    having written nothing."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), "--track", *TINY],
        cwd=tmp_path,
        env=env | wandb_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo_discrete.py: error: --track: "), run.stderr
    assert not glob.glob(str(tmp_path / "runs" / "*")), "nothing is written before the check"
    return lines[0]


def test_track_without_a_login_is_one_line_and_exit_2(tmp_path):
    line = refused_track_line(tmp_path)
    assert "--track: not logged in" in line and "wandb login" in line


def test_track_logs_the_training_and_evaluation_videos(tmp_path):
    flags = ["--track", "--capture-video", *TINY, "--save-model", "--eval-episodes", "2"]
    train_in(tmp_path, "ppo_discrete.py", *flags, env={"WANDB_MODE": "offline", "HOME": str(tmp_path)})
    local = glob.glob(str(tmp_path / "videos" / "*" / "*.mp4"))
    uploaded = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "videos" / "**" / "*.mp4"))
    assert local and len([path for path in uploaded if "train_" in path]) == len(local)
    assert len([path for path in uploaded if "eval_" in path]) == 2


def test_track_with_a_key_and_no_server_is_one_line_and_exit_2(tmp_path):
    # a port nothing listens on: W&B's own error, after its timeout
    line = refused_track_line(tmp_path, WANDB_API_KEY="0" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    assert "WANDB_MODE=offline" in line and "wandb login" in line


def test_track_ends_without_waiting_for_a_stuck_w_and_b_service(tmp_path):
    # W&B's exit hook waits for its service process to end: once, after the one line was out, it waited past two
    # minutes. Here the service is stopped (SIGSTOP) mid-request and never ends: the script exits all the same.
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    env |= {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    command = [sys.executable, str(REPO / "ppo_discrete.py"), "--track", *TINY]
    run = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    services, logs = [], tmp_path / ".cache" / "wandb" / "logs"
    while not services and run.poll() is None:  # the service, once it has sent the login's request
        if "api: retrying error" in "".join(log.read_text() for log in logs.glob("core-debug-*.log")):
            services = [int(pid) for pid in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()]
        time.sleep(0.05)
    for pid in services:
        os.kill(pid, signal.SIGSTOP)
    try:
        returncode = run.wait(timeout=60)
    finally:
        run.kill()
        for pid in services:
            os.kill(pid, signal.SIGKILL)
    stderr = run.stderr.read()
    assert services and returncode == 2, stderr
    assert len(stderr.splitlines()) == 1 and "WANDB_MODE=offline" in stderr, stderr
