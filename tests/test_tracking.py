"""--track: Weights & Biases logging (offline here: no network), its videos, and a clear line without a login."""

import glob
import os
import subprocess
import sys

from tests.conftest import REPO, TINY, train_in


def test_track_without_a_login_is_one_line_and_exit_2(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), "--track", *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--track: not logged in" in lines[0] and "wandb login" in lines[0], run.stderr
    assert not glob.glob(str(tmp_path / "runs" / "*")), "nothing is written before the check"


def test_track_logs_the_training_and_evaluation_videos(tmp_path):
    flags = ["--track", "--capture-video", *TINY, "--save-model", "--eval-episodes", "2"]
    train_in(tmp_path, "ppo_discrete.py", *flags, env={"WANDB_MODE": "offline", "HOME": str(tmp_path)})
    local = glob.glob(str(tmp_path / "videos" / "*" / "*.mp4"))
    uploaded = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / "media" / "videos" / "**" / "*.mp4"))
    assert local and len([path for path in uploaded if "train_" in path]) == len(local)
    assert len([path for path in uploaded if "eval_" in path]) == 2


def test_track_with_a_key_and_no_server_is_one_line_and_exit_2(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    env |= {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}  # a port nothing listens on
    run = subprocess.run(
        [sys.executable, str(REPO / "ppo_discrete.py"), "--track", *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ppo_discrete.py: error: --track: "), run.stderr
    assert "WANDB_MODE=offline" in lines[0] and not glob.glob(str(tmp_path / "runs" / "*"))
