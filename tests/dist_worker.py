"""One torchrun worker of a script, for the tests: runs the script's main() with the given flags and
saves the state it returns (weights, Adam state, statistics, step counts) to <out>/rank<R>.pt.

    torchrun --standalone --nproc_per_node 2 tests/dist_worker.py ppo_discrete OUT -- --env-id CartPole-v1
"""

import importlib
import os
import sys

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the scripts and tests.envs

if __name__ == "__main__":
    script, out, separator, *flags = sys.argv[1:]
    module = importlib.import_module(script)
    state = module.main(tyro.cli(module.Args, args=flags))
    torch.save(state, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
