#!/usr/bin/env bash
# Makes the virtualenv that benchmarks/speed.py runs CleanRL's scripts in (--cleanrl-python).
#
#   bash benchmarks/cleanrl_venv.sh [VENV_DIR]          # default: ../cleanrl-venv (beside this repository)
#
# It installs only packages from PyPI, pinned to what CleanRL's PPO scripts run on (gymnasium 0.29.1,
# numpy<2, ale-py 0.10.2 with its ROMs, OpenCV, MuJoCo) and the same torch as ours, so that the two
# sides differ by their code only. Nothing of CleanRL is installed or copied: speed.py runs the scripts
# of the clone you name (--cleanrl DIR, a clone of https://github.com/vwxyzjn/cleanrl) in place.
set -euo pipefail
VENV=${1:-$(cd "$(dirname "$0")/../.." && pwd)/cleanrl-venv}
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet \
    torch==2.13.0 "numpy<2" gymnasium==0.29.1 ale-py==0.10.2 opencv-python-headless==4.10.0.84 \
    "mujoco==3.1.6" imageio==2.38.1 tyro==1.0.17 tensorboard==2.20.0 "setuptools<81"
"$VENV/bin/python" -c "import gymnasium, ale_py, cv2, mujoco, torch, numpy; gymnasium.make('HalfCheetah-v4'); \
gymnasium.register_envs(ale_py) if hasattr(gymnasium, 'register_envs') else None; \
gymnasium.make('BreakoutNoFrameskip-v4'); print('ok', '$VENV', gymnasium.__version__, numpy.__version__, torch.__version__)"
