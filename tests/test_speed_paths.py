"""The faster paths compute what the plain ones do: FusedAdam is torch's fused Adam, clip_grad_norm_ is torch's,
NumpyPolicy acts as get_action_and_value does, and a run does not import torch._dynamo (a second of start-up)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import ppo_discrete
from tests.conftest import REPO


def tiny_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def test_fused_adam_steps_and_saves_as_torchs_fused_adam(script):
    ours, theirs = tiny_net(), tiny_net()
    ours_adam = script.FusedAdam(ours.parameters(), lr=1e-2, eps=1e-5)
    torch_adam = torch.optim.Adam(theirs.parameters(), lr=1e-2, eps=1e-5, fused=True)
    generator = torch.Generator().manual_seed(1)
    for step in range(20):
        x = torch.randn(8, 4, generator=generator)
        for net, adam in ((ours, ours_adam), (theirs, torch_adam)):
            adam.param_groups[0]["lr"] = 1e-2 * (1 - step / 20)  # as the loop anneals it
            adam.zero_grad()
            net(x).pow(2).sum().backward()
            adam.step()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p, q)
    saved, torch_saved = ours_adam.state_dict(), torch_adam.state_dict()
    assert saved["param_groups"] == torch_saved["param_groups"]
    for i, state in torch_saved["state"].items():
        for key, value in state.items():
            assert torch.equal(saved["state"][i][key], value) and saved["state"][i][key].dtype == value.dtype
    # a checkpoint of either loads into the other and continues the same
    restored = script.FusedAdam(tiny_net().parameters(), lr=1.0, eps=1e-5)
    restored.load_state_dict(torch_saved)
    assert restored.param_groups[0]["lr"] == torch_saved["param_groups"][0]["lr"]
    torch.optim.Adam(tiny_net().parameters(), lr=1.0, eps=1e-5, fused=True).load_state_dict(saved)
    with pytest.raises(ValueError):
        script.FusedAdam(torch.nn.Linear(4, 3).parameters(), lr=1.0, eps=1e-5).load_state_dict(torch_saved)


def test_clip_grad_norm_is_torchs(script):
    ours, theirs = tiny_net(), tiny_net()
    x = torch.randn(8, 4)
    for net in (ours, theirs):
        (net(x).pow(2).sum() * 100).backward()  # large: the clip scales the gradients down
    norm = script.clip_grad_norm_(list(ours.parameters()), 0.5)
    torch_norm = torch.nn.utils.clip_grad_norm_(list(theirs.parameters()), 0.5)
    assert torch.equal(norm, torch_norm) and norm > 0.5
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize(
    "nvec, shared, masked", [([3], False, False), ([2, 3], False, False), ([4], True, False), ([2, 3], False, True)]
)
def test_numpy_policy_acts_as_the_torch_forward(nvec, shared, masked):
    agent = ppo_discrete.Agent(5, nvec, shared_network=shared)
    obs = np.random.default_rng(0).normal(size=(64, 5)).astype(np.float32)
    mask = None
    if masked:  # some choices of each component not allowed, at least one allowed
        mask = np.random.default_rng(1).random((64, sum(nvec))) < 0.6
        mask[:, [0, nvec[0]]] = True
    torch_step = ppo_discrete.torch_policy(agent, agent.get_action_and_value, torch.device("cpu"))
    torch.manual_seed(3)
    actions, logprobs, values, _ = torch_step(obs, mask, None, np.zeros(64, np.float32))
    torch.manual_seed(3)  # the same noise: the same actions
    np_actions, np_logprobs, np_values, _ = ppo_discrete.NumpyPolicy(agent)(obs, mask)
    np.testing.assert_array_equal(np_actions, actions)
    np.testing.assert_allclose(np_logprobs, logprobs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_values, values, rtol=1e-5, atol=1e-6)
    if masked:
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        assert mask[np.arange(64)[:, None], np_actions + offsets].all()
    # views of the weights: an in-place update (as Adam's) shows at once
    with torch.no_grad():
        agent.critic_head.bias.add_(1.0)
    np.testing.assert_allclose(ppo_discrete.NumpyPolicy(agent)(obs, mask)[2], np_values + 1.0, rtol=1e-5)


def test_the_numpy_policy_is_a_flag(train):
    """Both settings train; the default (NumPy) and --no-numpy-policy (torch) take the same first actions."""
    flags = ["--total-timesteps", "1024", "--num-envs", "2", "--num-steps", "64"]
    numpy_run, torch_run = train("ppo_discrete.py", *flags), train("ppo_discrete.py", *flags, "--no-numpy-policy")
    returns = numpy_run.scalars("charts/episodic_return")
    assert returns[:5] == torch_run.scalars("charts/episodic_return")[:5] and len(returns) >= 5
    np.testing.assert_allclose(
        numpy_run.scalars("losses/value_loss")[0], torch_run.scalars("losses/value_loss")[0], rtol=1e-4
    )


@pytest.mark.parametrize("script_name", ["ppo_discrete.py", "ppo_continuous.py"])
def test_a_run_does_not_import_torch_dynamo(tmp_path, script_name):
    env_id = "CartPole-v1" if script_name == "ppo_discrete.py" else "Pendulum-v1"
    program = (
        f"import sys, runpy; sys.argv = [{str(REPO / script_name)!r}, '--env-id', {env_id!r}, "
        "'--total-timesteps', '256', '--num-envs', '2', '--num-steps', '64', '--save-model', '--eval-episodes', '1']; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); print('torch._dynamo' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
