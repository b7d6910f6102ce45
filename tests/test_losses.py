"""The policy and value losses and the KL-penalty rule (in every script), and ppo_discrete.py's
action masking and MultiDiscrete distributions."""

import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from ppo_discrete import Agent, logprob_and_entropy, mask_logits, sample_actions


def test_clipped_objective_values(script):
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.5, 0.7])
    advantages = torch.tensor([1.0, -1.0, 1.0, -2.0, -1.0])
    # per sample: max(-A r, -A clip(r, 0.8, 1.2))
    expected = np.mean([max(-0.5, -0.8), max(1.0, 1.0), max(-1.5, -1.2), max(3.0, 2.4), max(0.7, 0.8)])
    assert script.clipped_policy_loss(ratio, advantages, 0.2).item() == pytest.approx(expected)


def test_clipped_objective_has_zero_gradient_past_the_clip(script):
    # r > 1 + eps with A > 0, and r < 1 - eps with A < 0: the objective is flat (clipped)
    ratio = torch.tensor([1.5, 0.5, 1.1, 1.5], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    script.clipped_policy_loss(ratio, advantages, 0.2).backward()
    grad = ratio.grad.numpy()
    assert grad[0] == 0 and grad[1] == 0
    # inside the range, and past it on the pessimistic side, the gradient is -A / batch
    assert grad[2] == pytest.approx(-0.25) and grad[3] == pytest.approx(0.25)


def test_kl_penalty_loss_value(script):
    ratio = torch.tensor([0.5, 2.0])
    logratio = ratio.log()
    advantages = torch.tensor([1.0, -1.0])
    kl = np.mean([(0.5 - 1) - np.log(0.5), (2.0 - 1) - np.log(2.0)])
    expected = -np.mean([0.5, -2.0]) + 0.3 * kl
    assert script.kl_penalty_policy_loss(ratio, logratio, advantages, 0.3).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "kl, expected",
    [(0.016, 2.0), (0.0151, 2.0), (0.015, 1.0), (0.01, 1.0), (0.0067, 1.0), (0.0066, 0.5), (0.0, 0.5)],
)
def test_kl_coef_adapts_by_the_papers_rule(script, kl, expected):
    # target 0.01: doubled above 0.015, halved below 0.00667, kept in between
    assert script.adapt_kl_coef(1.0, kl, 0.01) == expected


def test_value_loss_clipping(script):
    old = torch.tensor([0.0, 0.0, 0.0])
    new = torch.tensor([1.0, 0.1, -1.0])
    returns = torch.tensor([0.5, 1.0, 0.0])
    # clipped predictions: 0.2, 0.1, -0.2 -> squared errors 0.09, 0.81, 0.04
    # unclipped:           1.0, 0.1, -1.0 -> 0.25, 0.81, 1.0
    assert script.value_loss(new, old, returns, 0.2, clip_vloss=True).item() == pytest.approx(
        0.5 * np.mean([0.25, 0.81, 1.0])
    )
    returns = torch.tensor([1.0, 1.0, -1.0])  # now clipping makes the first error larger: 0.64 > 0.0
    assert script.value_loss(new, old, returns, 0.2, clip_vloss=True).item() == pytest.approx(
        0.5 * np.mean([0.64, 0.81, 0.64])
    )
    assert script.value_loss(new, old, returns, 0.2, clip_vloss=False).item() == pytest.approx(
        0.5 * np.mean([0.0, 0.81, 0.0])
    )


def test_masked_actions_get_zero_probability_and_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(64, 5, requires_grad=True)
    mask = torch.rand(64, 5) < 0.5
    mask[:, 2] = True  # at least one valid action per row
    masked = mask_logits(logits, mask)
    assert torch.all(masked.softmax(-1)[~mask] == 0)
    actions = sample_actions(masked, [5])
    assert mask.gather(1, actions).all(), "sampled a masked action"
    logprob, entropy = logprob_and_entropy(masked, actions, [5])
    (logprob.sum() + entropy.sum()).backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert logits.grad[mask].abs().sum() > 0
    # the entropy is that of the distribution over valid actions only
    expected = Categorical(logits=logits.detach().masked_fill(~mask, float("-inf"))).entropy()
    torch.testing.assert_close(entropy.detach(), expected)


def test_multidiscrete_logprob_and_entropy_are_sums_of_the_components():
    torch.manual_seed(0)
    nvec = [3, 5, 2]
    logits = torch.randn(32, sum(nvec))
    actions = sample_actions(logits, nvec)
    assert actions.shape == (32, 3)
    logprob, entropy = logprob_and_entropy(logits, actions, nvec)
    components = [Categorical(logits=part) for part in logits.split(nvec, dim=-1)]
    torch.testing.assert_close(logprob, sum(c.log_prob(a) for c, a in zip(components, actions.unbind(-1))))
    torch.testing.assert_close(entropy, sum(c.entropy() for c in components))


def test_sampling_follows_the_softmax_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]]).repeat(40000, 1)
    counts = torch.bincount(sample_actions(logits, [4])[:, 0], minlength=4).numpy()
    # 40000 samples: the standard error of a frequency is below 0.0025, so 0.01 is four of them
    np.testing.assert_allclose(counts / 40000, logits[0].softmax(-1).numpy(), atol=0.01)


def test_orthogonal_init_and_shared_trunk():
    agent = Agent(obs_dim=4, nvec=[2], shared_network=False, ortho_init=True)
    first = agent.actor_trunk[0]
    torch.testing.assert_close(first.weight.T @ first.weight, 2 * torch.eye(4))  # gain sqrt(2)
    torch.testing.assert_close(agent.actor_head.weight @ agent.actor_head.weight.T, 1e-4 * torch.eye(2))  # gain 0.01
    torch.testing.assert_close(agent.critic_head.weight @ agent.critic_head.weight.T, torch.eye(1))  # gain 1
    assert all(torch.all(m.bias == 0) for m in agent.modules() if isinstance(m, torch.nn.Linear))
    assert agent.critic_trunk is not agent.actor_trunk

    default = Agent(obs_dim=4, nvec=[2], ortho_init=False)
    assert any(torch.any(m.bias != 0) for m in default.modules() if isinstance(m, torch.nn.Linear))

    shared = Agent(obs_dim=4, nvec=[2], shared_network=True)
    assert shared.critic_trunk is shared.actor_trunk
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(agent) - n_params(shared) == 4 * 64 + 64 + 64 * 64 + 64  # one trunk fewer
