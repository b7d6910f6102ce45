"""Logged episode statistics equal the true ones across same-step autoresets and time limits."""

import pytest

from tests.envs import counting_episodes


@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_logged_returns_and_lengths_are_exact(train, vector_mode):
    num_envs, num_steps, iterations, seed = 3, 10, 2, 4
    run = train(
        "ppo_discrete.py",
        "--env-id",
        "tests.envs:CountingEnv-v0",
        "--seed",
        str(seed),
        "--num-envs",
        str(num_envs),
        "--num-steps",
        str(num_steps),
        "--num-minibatches",
        "2",
        "--total-timesteps",
        str(num_envs * num_steps * iterations),
        "--vector-mode",
        vector_mode,
    )
    expected = counting_episodes(seed, num_envs, num_steps * iterations)
    assert len(expected) > 10 and any(length == 6 for *_, length in expected), "want time-limited episodes too"
    # the script logs every ended episode at the global step (vector steps x num_envs), in env order
    logged = list(
        zip(
            run.steps("charts/episodic_return"),
            run.scalars("charts/episodic_return"),
            run.scalars("charts/episodic_length"),
        )
    )
    assert logged == [(step * num_envs, ret, length) for step, _, ret, length in expected]
