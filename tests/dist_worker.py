"""One torchrun worker of a script, for the tests: runs the script's main() with the given flags and
saves the state it returns (weights, Adam state, statistics, step counts; not the RNGs, which are each worker's own)
to <out>/rank<R>.pt.

    torchrun --standalone --nproc_per_node 2 tests/dist_worker.py ppo_discrete OUT -- --env-id CartPole-v1

With PPO37_CHECK_COLLECTIVES=1 it also checks, while the run goes, that every optimizer step uses the mean
of all workers' own gradients, and records the raw observations, rewards and episode ends its envs gave
(in <out>/rank<R>_records.pt) so a test can recompute the merged normalisation statistics.
"""

import copy
import importlib
import os
import sys

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the scripts and tests.envs


def check_mean_gradients(module, checked: list) -> None:
    """Before each gradient clip (after the all-reduce), recompute every worker's minibatch loss from the
    inputs all workers gather, on a copy of the network (equal on all workers), and compare the gradient
    about to be used with the mean of their gradients."""
    loss_fn, clip = module.ppo_loss, torch.nn.utils.clip_grad_norm_
    last = {}

    def recording_loss(agent, *args):
        last["agent"], last["args"] = agent, args
        return loss_fn(agent, *args)

    def checking_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        gradients = []
        every_workers_args = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(every_workers_args, last["args"])
        for worker_args in every_workers_args:
            twin = copy.deepcopy(last["agent"])
            twin.zero_grad(set_to_none=True)
            loss_fn(twin, *worker_args)[0].backward()
            gradients.append([p.grad for p in twin.parameters()])
        for parameter, *worker_gradients in zip(parameters, *gradients):
            torch.testing.assert_close(parameter.grad, torch.stack(worker_gradients).mean(0), rtol=1e-5, atol=1e-7)
        checked.append(1)
        return clip(parameters, max_norm, *args, **kwargs)

    module.ppo_loss = recording_loss
    torch.nn.utils.clip_grad_norm_ = checking_clip  # the update calls nn.utils.clip_grad_norm_ after the all-reduce


def record_envs(module, records: dict) -> None:
    """Keep the raw observations of every reset and step, and the raw rewards and episode ends of every step."""
    make_envs = module.make_envs

    def recording_make_envs(*args, **kwargs):
        envs = make_envs(*args, **kwargs)
        if records["obs"]:  # the training envs only, not the evaluation's
            return envs
        reset, step = envs.reset, envs.step

        def recording_reset(**kwargs):
            obs, info = reset(**kwargs)
            records["obs"].append(np.array(obs))
            return obs, info

        def recording_step(actions):
            obs, reward, terminated, truncated, info = step(actions)
            records["obs"].append(np.array(obs))
            records["rewards"].append(np.array(reward))
            records["dones"].append(np.array(terminated | truncated))
            return obs, reward, terminated, truncated, info

        envs.reset, envs.step = recording_reset, recording_step
        return envs

    module.make_envs = recording_make_envs


if __name__ == "__main__":
    script, out, separator, *flags = sys.argv[1:]
    module = importlib.import_module(script)
    checked, records = [], {"obs": [], "rewards": [], "dones": []}
    if os.environ.get("PPO37_CHECK_COLLECTIVES") == "1":
        check_mean_gradients(module, checked)
        record_envs(module, records)
    state = {
        key: value for key, value in module.main(tyro.cli(module.Args, args=flags)).state_dict().items() if key != "rng"
    }
    torch.save(state, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    if checked or records["obs"]:
        records = {key: torch.from_numpy(np.stack(value)) for key, value in records.items()} | {
            "checked_gradient_steps": len(checked)
        }
        torch.save(records, os.path.join(out, f"rank{os.environ['RANK']}_records.pt"))
    sys.stdout.flush()  # and exit as the scripts' workers do: without the C++ teardown that can abort one (SIGABRT)
    os._exit(0)
