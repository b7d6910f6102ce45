"""compute_advantages (each script has its own copy) against a naive forward-sum reference."""

import numpy as np
import pytest


def naive_advantages(
    rewards, values, next_value, terminations, truncations, final_values, gamma, gae_lambda, gae, bootstrap_truncation
):
    """Sum each step's future forward, one env at a time, straight from the definitions."""
    num_steps, num_envs = rewards.shape
    advantages = np.zeros((num_steps, num_envs))
    for i in range(num_envs):
        for t in range(num_steps):
            gae_sum, mc_return, weight, discount = 0.0, 0.0, 1.0, 1.0
            for k in range(t, num_steps):
                if terminations[k, i]:
                    value_after = 0.0
                elif truncations[k, i]:
                    value_after = final_values[k, i] if bootstrap_truncation else 0.0
                else:
                    value_after = values[k + 1, i] if k + 1 < num_steps else next_value[i]
                delta = rewards[k, i] + gamma * value_after - values[k, i]
                gae_sum += weight * delta
                weight *= gamma * gae_lambda
                mc_return += discount * rewards[k, i]
                discount *= gamma
                if terminations[k, i] or truncations[k, i] or k == num_steps - 1:
                    mc_return += discount * value_after
                    break
            advantages[t, i] = gae_sum if gae else mc_return - values[t, i]
    return advantages, advantages + values


@pytest.fixture
def rollout():
    """A random rollout, T=40 x N=5, with frequent terminations and truncations (some at once)."""
    rng = np.random.default_rng(0)
    shape = (40, 5)
    terminations = (rng.random(shape) < 0.1).astype(np.float64)
    truncations = (rng.random(shape) < 0.1).astype(np.float64)
    return {
        "rewards": rng.normal(size=shape),
        "values": rng.normal(size=shape),
        "next_value": rng.normal(size=shape[1]),
        "terminations": terminations,
        "truncations": truncations,
        "final_values": rng.normal(size=shape) * truncations,
    }


@pytest.mark.parametrize("gae", [True, False], ids=["gae", "no-gae"])
@pytest.mark.parametrize("bootstrap_truncation", [True, False], ids=["bootstrap", "no-bootstrap"])
def test_matches_naive_reference(script, rollout, gae, bootstrap_truncation):
    assert rollout["terminations"].sum() > 5 and rollout["truncations"].sum() > 5
    assert (rollout["terminations"] * rollout["truncations"]).sum() > 0, "want steps that are both"
    hyper = {"gamma": 0.97, "gae_lambda": 0.9, "gae": gae, "bootstrap_truncation": bootstrap_truncation}
    tensors = rollout
    advantages, returns = script.compute_advantages(**tensors, **hyper)
    expected_advantages, expected_returns = naive_advantages(**rollout, **hyper)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-10, atol=1e-10)


def test_bootstrap_truncation_changes_only_episodes_cut_by_a_time_limit(script, rollout):
    tensors = rollout
    with_bootstrap, _ = script.compute_advantages(
        **tensors, gamma=0.99, gae_lambda=1.0, gae=True, bootstrap_truncation=True
    )
    without, _ = script.compute_advantages(**tensors, gamma=0.99, gae_lambda=1.0, gae=True, bootstrap_truncation=False)
    difference = with_bootstrap - without
    # the last step of a truncated (not terminated) episode differs by exactly gamma * V(final obs)
    time_limited = (rollout["truncations"] == 1) & (rollout["terminations"] == 0)
    np.testing.assert_allclose(difference[time_limited], 0.99 * rollout["final_values"][time_limited])
    # a step whose episode ends in a termination before any truncation is untouched
    assert np.all(difference[rollout["terminations"] == 1] == 0)


def test_gae_lambda_one_equals_discounted_returns(script, rollout):
    tensors = rollout
    gae_advantages, _ = script.compute_advantages(
        **tensors, gamma=0.95, gae_lambda=1.0, gae=True, bootstrap_truncation=True
    )
    mc_advantages, _ = script.compute_advantages(
        **tensors, gamma=0.95, gae_lambda=1.0, gae=False, bootstrap_truncation=True
    )
    np.testing.assert_allclose(gae_advantages, mc_advantages, rtol=1e-9, atol=1e-9)
