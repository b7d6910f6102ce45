"""The benchmark runner's pure helpers (the numbers the README's result tables quote come from them)."""

import math

from benchmarks.run import window_bounds, window_means


def test_window_means_average_the_episodes_that_ended_in_each_window():
    steps, returns = [50, 150, 160, 350, 449], [1.0, 2.0, 4.0, 8.0, 16.0]
    assert window_bounds(100, 450) == [(0, 100), (100, 200), (200, 300), (300, 450)]
    means = window_means(steps, returns, window_steps=100, last_step=450)
    # 4 windows; the last, 300-450, takes the remainder (steps 350 and 449); none ended in 200-300
    assert means[:2] == [1.0, 3.0] and math.isnan(means[2]) and means[3] == 12.0 and len(means) == 4
    assert window_means(steps, returns, window_steps=1000, last_step=450) == [6.2]
