"""The benchmark runner's pure helpers (the numbers the README's result tables quote come from them)."""

import math
from pathlib import Path

from benchmarks.run import window_bounds, window_means


def test_window_means_average_the_episodes_that_ended_in_each_window():
    steps, returns = [50, 150, 160, 350, 449], [1.0, 2.0, 4.0, 8.0, 16.0]
    assert window_bounds(100, 450) == [(0, 100), (100, 200), (200, 300), (300, 450)]
    means = window_means(steps, returns, window_steps=100, last_step=450)
    # 4 windows; the last, 300-450, takes the remainder (steps 350 and 449); none ended in 200-300
    assert means[:2] == [1.0, 3.0] and math.isnan(means[2]) and means[3] == 12.0 and len(means) == 4
    assert window_means(steps, returns, window_steps=1000, last_step=450) == [6.2]


def test_a_resumed_run_is_read_once(tmp_path):
    """A resumed run's writer purges what the interrupted process logged after its checkpoint: the reader counts
    each iteration and each episode once, as TensorBoard does."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from benchmarks.run import read_scalars
    from tests.conftest import TINY, train_in

    run = train_in(tmp_path, "ppo_discrete.py", *TINY, "--checkpoint-every", "4")  # 8 iterations, checkpoints 4, 8
    (checkpoint,) = [path for path in (Path(run.run_dir) / "checkpoints").iterdir() if "0000004" in path.name]
    train_in(tmp_path, "ppo_discrete.py", *TINY, "--checkpoint-every", "4", "--resume", str(checkpoint))
    reference = EventAccumulator(run.run_dir, size_guidance={"scalars": 0})
    reference.Reload()
    for tag in ["charts/SPS", "charts/episodic_return"]:
        steps = [step for step, _ in read_scalars(run.run_dir, tag)]
        assert steps == [event.step for event in reference.Scalars(tag)]
    assert len(read_scalars(run.run_dir, "charts/SPS")) == 8


def test_aggregate_iqm_and_its_stratified_bootstrap_interval(tmp_path):
    import numpy as np

    from benchmarks.aggregate import SCORES, Args, iqm, main, stratified_bootstrap

    assert iqm(np.arange(8.0)) == 3.5  # the middle half: 2, 3, 4, 5
    assert iqm(np.array([0.0, 1.0, 1.0, 100.0])) == 1.0  # an outlier does not move it
    rng = np.random.default_rng(0)
    assert stratified_bootstrap({"a": np.full(3, 0.5), "b": np.full(3, 0.5)}, 100, rng) == (0.5, 0.5)
    # each env's runs are resampled within the env: an env of constant scores stays in every resample
    low, high = stratified_bootstrap({"a": np.zeros(4), "b": np.array([1.0, 2.0, 3.0, 4.0])}, 500, rng)
    assert 0 <= low < high <= 4
    # a folder of benchmarks/run.py: scores normalised by the env's random and reference scores
    random_score, reference = SCORES["CartPole-v1"]
    folder = tmp_path / "run"
    folder.mkdir()
    scores = [random_score, reference, reference, reference]
    rows = [f"CartPole-v1,{seed},{score},1.0" for seed, score in enumerate(scores)]
    (folder / "summary.csv").write_text("env_id,seed,last100,seconds\n" + "\n".join(rows) + "\n")
    main(Args(groups=[f"cartpole={folder}"], out=str(tmp_path / "out"), bootstrap=50))
    table = (tmp_path / "out" / "aggregate.md").read_text()
    assert "| cartpole | 1.000 |" in table and (tmp_path / "out" / "aggregate.png").exists()  # IQM of 0, 1, 1, 1
