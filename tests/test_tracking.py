"""--track: Weights & Biases logging (offline here: no network), its videos, and a clear line without a login."""

import glob
import os
import subprocess
import sys

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
