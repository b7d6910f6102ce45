"""The policy and value losses and the KL-penalty rule (in every script), and ppo_discrete.py's
action masking and MultiDiscrete distributions."""

import copy

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


def one_minibatch(script, batch_size: int = 8):
    """An agent of the script and a batch of its format whose stored log-probs make the ratios known in advance."""
    torch.manual_seed(0)
    if script.__name__ == "ppo_atari":
        args = script.Args(frame_size=36, frame_stack=1, num_envs=batch_size, num_steps=1)
        agent, obs = script.Agent(args, 4), torch.randint(0, 256, (batch_size, 1, 36, 36), dtype=torch.uint8)
    elif script.__name__ == "ppo_continuous":
        args, agent, obs = script.Args(num_envs=batch_size, num_steps=1), script.Agent(3, 2), torch.randn(batch_size, 3)
    else:
        args, agent, obs = (
            script.Args(num_envs=batch_size, num_steps=1),
            script.Agent(3, [3]),
            torch.randn(batch_size, 3),
        )
    args.update_epochs, args.num_minibatches, args.ent_coef, args.max_grad_norm = 1, 1, 0.05, 0.05
    if script.__name__ != "ppo_continuous":  # a sharp policy: a near-uniform one has almost no entropy gradient
        with torch.no_grad():
            agent.actor_head.weight.mul_(100.0)
    with torch.no_grad():
        action, logprob = agent.get_action_and_value(obs)[:2]
    ratios = torch.tensor([0.5, 0.9, 1.0, 1.1, 1.25, 1.5, 0.7, 1.3])  # mean 1.03: the two KL estimators differ
    batch = {"obs": obs, "actions": action, "logprobs": logprob - ratios.log(), "values": torch.randn(batch_size)}
    batch |= {"advantages": torch.randn(batch_size) + 1.0, "returns": torch.randn(batch_size)}
    batch |= {"starts": torch.zeros(batch_size)} if script.__name__ != "ppo_continuous" else {}
    batch |= {"masks": None} if script.__name__ == "ppo_discrete" else {}
    return args, agent, batch, ratios


def test_one_update_step_is_the_reference_ppo_step_and_logs_its_debug_variables(script):
    """details 7, 10, 11, 12: one minibatch, one epoch: the weights after `update` are those of one SGD step on
    clip loss - ent_coef x entropy + vf_coef x clipped value loss of normalised advantages, its gradient clipped to
    --max-grad-norm; the logged KL estimators and clip fraction are those of the known ratios."""
    args, agent, batch, ratios = one_minibatch(script)
    reference = copy.deepcopy(agent)
    clip = 0.2
    # SGD, not Adam: Adam's first step is about lr x sign(gradient), blind to the gradient's scale
    stats = call_update(script, agent, torch.optim.SGD(agent.parameters(), lr=0.5), batch, args, clip)

    _, logprob, entropy, value = reference.get_action_and_value(batch["obs"], batch["actions"])[:4]
    ratio = (logprob - batch["logprobs"]).exp()
    advantages = (batch["advantages"] - batch["advantages"].mean()) / (batch["advantages"].std() + 1e-8)
    pg_loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
    clipped_value = batch["values"] + (value - batch["values"]).clamp(-clip, clip)
    v_loss = 0.5 * torch.max((value - batch["returns"]) ** 2, (clipped_value - batch["returns"]) ** 2).mean()
    loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(list(reference.parameters()), args.max_grad_norm) > args.max_grad_norm
    optimizer.step()
    for (name, after), expected in zip(agent.named_parameters(), reference.parameters()):
        torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6, msg=name)

    # abs: logits x 100 make the log-probs large, so the CNN's kernels for one layout or another differ in float32
    # by about 1e-5 absolute (seen as 3e-7 in the policy loss on one CPU kind)
    assert stats["losses/policy_loss"] == pytest.approx(pg_loss.item(), rel=1e-5, abs=1e-5)
    assert stats["losses/value_loss"] == pytest.approx(v_loss.item(), rel=1e-5, abs=1e-5)
    assert stats["losses/entropy"] == pytest.approx(entropy.mean().item(), rel=1e-5, abs=1e-5)
    assert stats["losses/old_approx_kl"] == pytest.approx((-ratios.log()).mean().item(), rel=1e-4)
    assert stats["losses/approx_kl"] == pytest.approx(((ratios - 1) - ratios.log()).mean().item(), rel=1e-4)
    assert stats["losses/clipfrac"] == 0.625  # |r - 1| > 0.2: 0.5, 1.25, 1.5, 0.7, 1.3
    assert stats["charts/minibatch_steps"] == 1


def call_update(script, agent, optimizer, batch, args, clip_coef):
    if script.__name__ == "ppo_continuous":
        return script.update(agent, optimizer, batch, args, clip_coef, 1.0)
    return script.update(agent, optimizer, batch, None, args, clip_coef, 1.0)
