"""Your own environments: `module:EnvId` found in the working directory, and --env-kwargs reaching gym.make in
training, in evaluation and in the checkpoint."""

import importlib

import pytest
import torch

from tests.conftest import run_script, train_in

MODULE = """from gymnasium.envs.registration import register

register("Corridor-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=12)
"""
SMALL = ["--total-timesteps", "256", "--num-envs", "2", "--num-steps", "64", "--update-epochs", "1"]


def test_a_module_in_the_working_directory_registers_its_env(tmp_path):
    (tmp_path / "myenvs.py").write_text(MODULE)  # the user's project, not on PYTHONPATH
    flags = ["--env-id", "myenvs:Corridor-v0", *SMALL, "--vector-mode", "async", "--save-model", "--eval-episodes", "2"]
    run = train_in(tmp_path, "ppo_discrete.py", *flags)
    assert max(run.scalars("charts/episodic_length")) <= 12  # the module's own registration
    checkpoint = f"{run.run_dir}/ppo_discrete.pt"
    evaluated = run_script("ppo_discrete.py", "--eval-checkpoint", checkpoint, "--eval-episodes", "2", cwd=tmp_path)
    assert evaluated.returncode == 0 and "over 2 episodes" in evaluated.stdout, evaluated.stderr[-2000:]


def test_a_module_that_cannot_be_imported_is_named_with_what_to_do(tmp_path):
    run = run_script("ppo_continuous.py", "--env-id", "nosuchmodule:Corridor-v0", cwd=tmp_path)
    assert run.returncode == 2 and "No module named 'nosuchmodule'" in run.stderr and "PYTHONPATH" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module", ["ppo_discrete", "ppo_continuous"])
def test_env_kwargs_are_python_literals_or_else_strings(module):
    m = importlib.import_module(module)
    kwargs = ("max_episode_steps=7", "render_mode=rgb_array")
    with m.make_gym_env(m.Args(env_id="CartPole-v1", env_kwargs=kwargs)) as env:
        assert env.spec.max_episode_steps == 7 and env.render_mode == "rgb_array"


@pytest.mark.parametrize("script, env_id", [("ppo_discrete.py", "CartPole-v1"), ("ppo_continuous.py", "Pendulum-v1")])
def test_env_kwargs_reach_training_evaluation_and_the_checkpoint(tmp_path, script, env_id):
    flags = ["--env-id", env_id, "--env-kwargs", "max_episode_steps=20", "--save-model", "--eval-episodes", "2"]
    run = train_in(tmp_path, script, *flags, *SMALL)
    assert max(run.scalars("charts/episodic_length")) == 20  # Pendulum's own limit is 200 steps
    # evaluation: CartPole scores 1 a step; Pendulum at most -16.3 a step, so 20 steps score above -330
    low, high = (0, 20) if script == "ppo_discrete.py" else (-330, 0)
    assert all(low <= value <= high for value in run.scalars("eval/episodic_return")), run.scalars(
        "eval/episodic_return"
    )
    checkpoint = f"{run.run_dir}/{script[:-3]}.pt"
    assert list(torch.load(checkpoint, weights_only=True)["args"]["env_kwargs"]) == ["max_episode_steps=20"]
    evaluated = run_script(script, "--eval-checkpoint", checkpoint, "--eval-episodes", "2", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    mean = float(evaluated.stdout.split(": ")[-1].split()[0])
    assert low <= mean <= high
