"""--recurrent, details 32-36, in ppo_discrete.py and ppo_atari.py: the LSTM's init, its state reset
at episode starts, the update re-running whole sequences from the rollout's saved state, the flags
that combine with it, and learning a partially observed CartPole that needs memory."""

import importlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from ppo_discrete import adapt_kl_coef
from tests.conftest import TINY

DISCRETE, ATARI = "ppo_discrete.py", "ppo_atari.py"
ITERATIONS = 8  # TINY: 1024 steps / (2 envs x 64 steps)


@pytest.fixture(params=["ppo_discrete", "ppo_atari"])
def module(request):
    return importlib.import_module(request.param)


def test_lstm_init_is_orthogonal_with_zero_biases(module):
    lstm = module.lstm_init(nn.LSTM(64, 128))
    for name, param in lstm.named_parameters():
        if name.startswith("bias"):
            assert torch.all(param == 0), name
        else:  # [4H, F] with 4H > F: orthonormal columns, gain 1
            torch.testing.assert_close(param.T @ param, torch.eye(param.shape[1]), atol=1e-5, rtol=0)
    default = module.lstm_init(nn.LSTM(64, 128), ortho=False)
    assert torch.any(default.bias_ih_l0 != 0)


def test_state_resets_where_an_episode_starts(module):
    torch.manual_seed(0)
    lstm = module.lstm_init(nn.LSTM(5, 8))
    num_steps, num_envs = 6, 2
    features = torch.randn(num_steps, num_envs, 5)
    starts = torch.zeros(num_steps, num_envs)
    starts[3, 0] = starts[5, 1] = 1.0  # env 0's next episode starts at step 3, env 1's at step 5
    state = (torch.randn(1, num_envs, 8), torch.randn(1, num_envs, 8))  # mid-episode state before step 0
    outputs, (h, c) = module.lstm_sequence(lstm, features.reshape(-1, 5), state, starts.reshape(-1))
    outputs = outputs.reshape(num_steps, num_envs, 8)

    # after the episode start, env 0 is exactly a fresh run from the zero state
    fresh, (fresh_h, fresh_c) = lstm(features[3:, :1])
    torch.testing.assert_close(outputs[3:, 0], fresh[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close((h[:, 0], c[:, 0]), (fresh_h[:, 0], fresh_c[:, 0]), rtol=0, atol=1e-6)
    # env 1 carries its state on until step 5, then starts fresh
    carried, _ = lstm(features[:5, 1:], (state[0][:, 1:], state[1][:, 1:]))
    torch.testing.assert_close(outputs[:5, 1], carried[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs[5, 1], lstm(features[5:, 1:])[0][0, 0], rtol=0, atol=1e-6)
    # ... and the state before an episode start matters up to it (the reset is not a no-op)
    assert not torch.allclose(outputs[2, 0], lstm(features[:3, :1])[0][2, 0], atol=1e-3)

    # one step at a time (as in the rollout) gives what the whole sequence gives (as in the update)
    stepped, step_state = [], state
    for t in range(num_steps):
        output, step_state = module.lstm_sequence(lstm, features[t], step_state, starts[t])
        stepped.append(output)
    torch.testing.assert_close(torch.stack(stepped), outputs, rtol=0, atol=1e-6)


def make_agent(module, shared_network: bool):
    """A small agent of the module with a policy sharp enough that the LSTM state shows in the log-probs."""
    if module.__name__ == "ppo_atari":
        settings = {"frame_stack": 1, "frame_size": 36, "shared_network": shared_network}
        agent = module.Agent(module.Args(**settings, recurrent=True, lstm_hidden_size=16), 4)
        observe = lambda n: torch.randint(0, 256, (n, 1, 36, 36), dtype=torch.uint8)  # noqa: E731
    else:
        agent = module.Agent(3, [2, 3], shared_network=shared_network, lstm_hidden_size=16)
        observe = lambda n: torch.randn(n, 3)  # noqa: E731
    with torch.no_grad():
        agent.actor_head.weight.mul_(300.0)
    return agent, observe


@pytest.mark.parametrize("shared_network", [False, True], ids=["separate", "shared"])
def test_state_starts_at_zero(module, shared_network):
    """detail 33: (h, c) before the first step are zeros, [L, N, H]: L = 1 shared LSTM or 2 (actor's, critic's)."""
    agent, _ = make_agent(module, shared_network)
    h, c = agent.initial_state(3)
    assert h.shape == c.shape == (1 if shared_network else 2, 3, 16)
    assert not h.any() and not c.any()


@pytest.mark.parametrize("shared_network", [False, True], ids=["separate", "shared"])
def test_update_reproduces_the_rollout(module, shared_network):
    """detail 35/36: re-running minibatches of whole env sequences from the state saved at the
    rollout's start gives the rollout's log-probs and values (ratio 1 before any update)."""
    torch.manual_seed(0)
    agent, observe = make_agent(module, shared_network)
    num_steps, num_envs = 12, 4
    obs = torch.stack([observe(num_envs) for _ in range(num_steps)])
    starts = (torch.rand(num_steps, num_envs) < 0.2).float()
    state = agent.initial_state(num_envs)
    with torch.no_grad():
        for _ in range(3):  # so the rollout starts mid-episode, from a non-zero state
            *_, state = agent.get_action_and_value(observe(num_envs), lstm_state=state, starts=torch.zeros(num_envs))
        rollout_state = state
        actions, logprobs, values = [], [], []
        for t in range(num_steps):
            action, logprob, _, value, state = agent.get_action_and_value(obs[t], lstm_state=state, starts=starts[t])
            actions.append(action), logprobs.append(logprob), values.append(value)
        # bootstrapping from the state after the rollout is the rollout's next step
        next_obs = observe(num_envs)
        next_value = agent.get_value(next_obs, state, torch.zeros(num_envs))
        _, _, _, stepped_value, _ = agent.get_action_and_value(next_obs, lstm_state=state, starts=torch.zeros(num_envs))
        torch.testing.assert_close(next_value, stepped_value)

    b_obs, b_actions, b_starts = obs.flatten(0, 1), torch.stack(actions).flatten(0, 1), starts.reshape(-1)
    b_logprobs, b_values = torch.stack(logprobs).reshape(-1), torch.stack(values).reshape(-1)
    order = np.random.default_rng(0).permutation(num_envs)
    for mb_envs, mb_inds in module.minibatches(order, 2, num_steps, num_envs, recurrent=True):
        mb_state = (rollout_state[0][:, mb_envs], rollout_state[1][:, mb_envs])
        with torch.no_grad():
            _, newlogprob, _, newvalue, _ = agent.get_action_and_value(
                b_obs[mb_inds], action=b_actions[mb_inds], lstm_state=mb_state, starts=b_starts[mb_inds]
            )
            # the check below can fail: without the resets the same replay gives other log-probs
            _, unreset, _, _, _ = agent.get_action_and_value(
                b_obs[mb_inds], action=b_actions[mb_inds], lstm_state=mb_state, starts=torch.zeros(len(mb_inds))
            )
        torch.testing.assert_close(newlogprob, b_logprobs[mb_inds], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(newvalue, b_values[mb_inds], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(unreset, b_logprobs[mb_inds], atol=1e-3)


def test_minibatches_hold_whole_env_sequences(module):
    order = np.array([2, 0, 3, 1])
    parts = list(module.minibatches(order, 2, 3, 4, recurrent=True))
    # time-major: step t of env e is flat index t * 4 + e
    assert [list(envs) for envs, _ in parts] == [[2, 0], [3, 1]]
    assert [list(inds) for _, inds in parts] == [[2, 0, 6, 4, 10, 8], [3, 1, 7, 5, 11, 9]]


def test_atari_recurrent_stacks_one_frame_by_default():
    from ppo_atari import Args

    assert Args(recurrent=True).frame_stack == 1
    assert Args().frame_stack == 4
    assert Args(recurrent=True, frame_stack=4).frame_stack == 4


# One update of one minibatch scores the rollout with the unchanged policy: the logged KL is 0 only
# if the update rebuilt every LSTM state the rollout acted with (a learning rate high enough to make
# the policy depend on its memory within a few iterations)
FIRST_MINIBATCH = ["--recurrent", "--num-minibatches", "1", "--update-epochs", "1", "--learning-rate", "3e-3"]
RATIO_ONE = [
    (DISCRETE, ["--env-id", "CartPole-v1", "--num-envs", "4", "--num-steps", "64", "--total-timesteps", "6144"]),
    (DISCRETE, TINY + ["--env-id", "tests.envs:MultiDiscreteTarget-v0"]),
    (
        DISCRETE,
        TINY + ["--env-id", "tests.envs:MaskedTarget-v0", "--action-masking"],
    ),  # the env raises on a masked action
    (DISCRETE, TINY + ["--env-id", "tests.envs:CountingEnv-v0"]),  # time-limit truncations, bootstrapped
    (DISCRETE, TINY + ["--env-id", "tests.envs:CountingEnv-v0", "--shared-network"]),
    (ATARI, TINY + ["--env-backend", "gymnasium"]),
    (ATARI, TINY + ["--env-backend", "ale", "--no-shared-network"]),
]


@pytest.mark.parametrize("script, flags", RATIO_ONE, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_first_minibatch_ratio_is_one(train, script, flags):
    run = train(script, *flags, *FIRST_MINIBATCH)
    kls = run.scalars("losses/approx_kl")
    assert len(kls) >= ITERATIONS and max(abs(kl) for kl in kls) < 1e-6, kls
    assert max(run.scalars("losses/clipfrac")) == 0
    assert np.all(np.isfinite(run.scalars("losses/value_loss")))
    assert run.scalars("charts/episodic_return"), "no episode ended"


def test_recurrent_target_kl_stops_before_a_minibatch_step(train):
    run = train(
        DISCRETE,
        *TINY,
        "--recurrent",
        "--num-minibatches",
        "2",
        "--target-kl",
        "1e-10",
        "--kl-stop",
        "minibatch",
        "--no-anneal-lr",
    )
    assert run.scalars("charts/minibatch_steps") == [1] * ITERATIONS


def test_recurrent_kl_penalty_adapts_beta(train):
    run = train(
        DISCRETE, *TINY, "--recurrent", "--num-minibatches", "2", "--loss", "kl-penalty", "--kl-target", "0.001"
    )
    betas, kls = run.scalars("charts/kl_coef"), run.scalars("losses/kl_after_update")
    assert len(betas) == len(kls) == ITERATIONS and betas[0] == 1.0
    for i in range(ITERATIONS - 1):
        assert betas[i + 1] == pytest.approx(adapt_kl_coef(betas[i], kls[i], 0.001))
