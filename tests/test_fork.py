"""A researcher's fork: the run-control section deleted, the Agent edited, the optimizer swapped, main() called from
Python. Each script must stay a file one can copy and change without anything silently going wrong."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, run_script

SCRIPTS = ["ppo_discrete.py", "ppo_continuous.py", "ppo_atari.py"]
BANNER = "# ==== Run control"
ONE_UPDATE = ["--update-epochs", "1", "--num-minibatches", "1"]  # one minibatch of the whole batch, one step
FLAGS = {
    "ppo_discrete.py": [],
    "ppo_continuous.py": ["--env-id", "Pendulum-v1"],
    "ppo_atari.py": ["--env-id", "PongNoFrameskip-v4", "--env-backend", "ale"],
}


def fork(tmp_path: Path, script: str, edits: list[tuple[str, str]] = (), keep_run_control: bool = True) -> Path:
    """A copy of `script` in tmp_path with each (old, new) text replaced once (old must be there), and the run-control
    section cut off unless kept."""
    source = (REPO / script).read_text()
    for old, new in edits:
        assert source.count(old) >= 1, f"{old!r} is not in {script}: re-point the edit"
        source = source.replace(old, new)
    if not keep_run_control:
        source = source[: source.index(BANNER)]
    path = tmp_path / script
    path.write_text(source)
    return path


def python(cwd: Path, code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{cwd}{os.pathsep}{REPO}"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def readme_driver() -> str:
    """The python block under the README's "Your own loop" heading."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Your own loop") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


# Small drivers of the other two scripts, written as the README's is for ppo_discrete.py
DRIVERS = {
    "ppo_discrete.py": None,  # the README's
    "ppo_continuous.py": """
import numpy as np, torch
from ppo_continuous import Agent, Args, Normalization, TrainState, make_envs, train
args = Args(env_id="Pendulum-v1", total_timesteps=4096, num_envs=2, num_steps=256)
torch.manual_seed(args.seed), np.random.seed(args.seed)
envs = make_envs(args)
obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
agent = Agent(obs_dim, action_dim)
optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
state = TrainState(agent, optimizer, Normalization(args, obs_dim), args.kl_coef)
for logs, episodes in train(args, envs, state):
    print(state.global_step, len(episodes), logs["losses/value_loss"])
""",
    "ppo_atari.py": """
import numpy as np, torch
from ppo_atari import Agent, Args, TrainState, make_envs, train
args = Args(env_id="PongNoFrameskip-v4", env_backend="ale", total_timesteps=256, num_envs=2, num_steps=64)
torch.manual_seed(args.seed), np.random.seed(args.seed)
envs = make_envs(args)
agent = Agent(args, envs.single_action_space.n)
optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=args.adam_eps)
state = TrainState(agent, optimizer, args.kl_coef)
for logs, episodes in train(args, envs, state):
    print(state.global_step, len(episodes), logs["losses/value_loss"])
""",
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_fork_without_run_control_trains_with_its_own_loop(tmp_path, script):
    fork(tmp_path, script, keep_run_control=False)
    driver = DRIVERS[script] or readme_driver()
    done = python(tmp_path, driver)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [int(line.split()[0]) for line in done.stdout.splitlines()]
    assert steps and steps == sorted(steps) and steps[-1] > 0
    assert not (tmp_path / "runs").exists()  # nothing of run control ran


EDITS = {  # fork edits of the Agent, each a one-line change a researcher would make
    "relu": ("ppo_discrete.py", [("nn.Tanh()", "nn.ReLU()")]),
    "layer-norm": (
        "ppo_discrete.py",
        [
            (
                "                nn.Tanh(),\n            )",
                "                nn.Tanh(),\n                nn.LayerNorm(64),\n            )",
            )
        ],
    ),
    "temperature": (
        "ppo_discrete.py",
        [("logits = self.actor_head(hidden)", "logits = self.actor_head(hidden) / 0.3")],
    ),
    "width": (
        "ppo_discrete.py",
        [("nn.Linear(obs_dim, 64)", "nn.Linear(obs_dim, 256)"), ("nn.Linear(64, 64)", "nn.Linear(256, 64)")],
    ),
    "recurrent-relu": ("ppo_discrete.py", [("nn.Tanh()", "nn.ReLU()")]),
    "continuous-relu": ("ppo_continuous.py", [("nn.Tanh()", "nn.ReLU()")]),
    "atari-temperature": (
        "ppo_atari.py",
        [("self.actor_head(hidden).log_softmax(-1)", "(self.actor_head(hidden) / 0.3).log_softmax(-1)")],
    ),
}


@pytest.mark.parametrize("edit", EDITS)
def test_a_fork_that_edits_the_agent_stays_on_policy(tmp_path, edit):
    # with one epoch of one minibatch, the update scores the rollout's actions with the network that took them: the
    # first (and only) minibatch's ratios are 1 and every logged old_approx_kl is 0 up to float rounding
    script, edits = EDITS[edit]
    path = fork(tmp_path, script, edits)
    flags = [*FLAGS[script], *TINY, *ONE_UPDATE] + (["--recurrent", "--num-envs", "2"] if "recurrent" in edit else [])
    run = run_script(str(path), *flags, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    kls = run.scalars("losses/old_approx_kl")
    assert len(kls) == len(run.scalars("charts/SPS")) > 0
    assert max(abs(kl) for kl in kls) < 1e-6, kls
    assert run.scalars("losses/clipfrac") == [0.0] * len(kls)


def test_a_fork_swaps_the_optimizer_and_adds_a_scheduler_in_one_line(tmp_path):
    # AdamW and a scheduler, each a one-line change: they train, checkpoint, resume
    optimizer = "optimizer = torch.optim.Adam(agent.parameters(), args.learning_rate, eps=args.adam_eps, fused=True)"
    edits = [
        (
            optimizer,
            optimizer.replace("Adam(", "AdamW(") + "; torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1)",
        )
    ]
    path = fork(tmp_path, "ppo_discrete.py", edits)
    first = run_script(str(path), *TINY, "--checkpoint-every", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = sorted((tmp_path / "runs").glob("*/checkpoints/*.pt"))[0]
    resumed = run_script(str(path), "--resume", str(checkpoint), "--total-timesteps", "2048", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]


def test_only_public_torch_apis():
    for script in SCRIPTS:
        source = (REPO / script).read_text()
        assert not re.findall(r"torch\.(?:\w+\.)*_\w+", source), script  # torch._foreach_*, torch._inductor, ...
        assert "torch.optim.Adam(agent.parameters()" in source and "nn.utils.clip_grad_norm_(" in source


RESTORED = """
import signal, sys, torch
import {module} as m
def handler(signum, frame): pass
signal.signal(signal.SIGINT, handler); signal.signal(signal.SIGTERM, handler); torch.set_num_threads(3)
for flags in ({flags!r}, {failing!r}):
    try:
        m.main(m.Args(**flags))
    except SystemExit as e:
        print("exit", e.code, file=sys.stderr)
    assert signal.getsignal(signal.SIGINT) is handler and signal.getsignal(signal.SIGTERM) is handler, flags
    assert torch.get_num_threads() == 3, torch.get_num_threads()
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []), "SIGINT left blocked"
print("restored")
"""


@pytest.mark.parametrize("script", SCRIPTS)
def test_main_called_in_process_puts_back_what_it_changed(tmp_path, script):
    flags = {"env_id": FLAGS[script][1] if FLAGS[script] else "CartPole-v1", "total_timesteps": 256, "num_envs": 2}
    flags |= {"num_steps": 64, "update_epochs": 1, "num_minibatches": 1} | (
        {"env_backend": "ale"} if "atari" in script else {}
    )
    failing = flags | {"learning_rate": 1e30, "anneal_lr": False, "update_epochs": 2}  # stops: non-finite weights
    done = python(tmp_path, RESTORED.format(module=script[:-3], flags=flags, failing=failing))
    assert done.returncode == 0 and "restored" in done.stdout, done.stderr[-3000:]
    assert "stopped: iteration 1: the loss is" in done.stderr  # the failing run did stop, with its one line
