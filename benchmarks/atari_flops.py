"""Achieved GFLOP/s of ppo_atari.py's update step on this machine, in a few numeric set-ups.

    python benchmarks/atari_flops.py                       # every variant, torch's default threads
    python benchmarks/atari_flops.py --variants fp32 channels-last

One update step = ppo_atari.py's own minibatch loss (`ppo_loss` at the script's defaults), its
backward pass and the Adam step, for the Nature CNN (shared trunk, Breakout's 4 actions) on a
minibatch of 256 stacked 84x84 frames, the shape of ppo_atari.py's default minibatch.
The FLOPs are counted from the layer shapes: 2 per multiply-add in the forward pass, and twice the
forward's for the backward pass (gradients of weights and of activations), 3x forward in all.
The rollout's forward pass for the 8 envs is timed too. Variants:
- fp32: the frames as stored (uint8, channels-first), the model as built;
- channels-last: the minibatch's frames channels-last in memory (what ppo_atari.py does on CPU);
- bf16: the forward pass under torch.autocast(bfloat16);
- compile: the loss (forward, and with it the backward) through torch.compile, as --compile does.
"""

import os
import sys
import time
from dataclasses import dataclass, field

import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ppo_atari import Agent, ppo_loss  # noqa: E402
from ppo_atari import Args as ScriptArgs

VARIANTS = ["fp32", "channels-last", "bf16", "compile"]


@dataclass
class Args:
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    """set-ups to time, each in this process one after the other (fp32, channels-last, bf16, compile)"""
    minibatch: int = 256
    """samples per update step (ppo_atari.py's default: 8 envs x 128 steps / 4 minibatches)"""
    steps: int = 30
    """timed update steps per variant (after two warm-up steps)"""


def forward_flops(agent: Agent, frame_size: int = 84) -> int:
    """Multiply-adds x 2 of one sample's forward pass through the convolutions and linear layers."""
    flops, size = 0, frame_size
    for layer in agent.actor_trunk:
        if isinstance(layer, torch.nn.Conv2d):
            size = (size - layer.kernel_size[0]) // layer.stride[0] + 1
            flops += (
                2 * size * size * layer.out_channels * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            )
        elif isinstance(layer, torch.nn.Linear):
            flops += 2 * layer.in_features * layer.out_features
    return flops + 2 * agent.actor_head.in_features * (agent.actor_head.out_features + 1)  # policy and value heads


def time_variant(variant: str, args: Args) -> tuple[float, float]:
    """-> (seconds per update step, seconds per rollout forward of 8 envs)."""
    torch.manual_seed(0)
    agent = Agent(ScriptArgs(frame_stack=4, frame_size=84), num_actions=4)
    optimizer = torch.optim.Adam(agent.parameters(), lr=2.5e-4, eps=1e-5, fused=True)
    frames = torch.randint(0, 256, (1024, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 4, (1024,))
    script_args = ScriptArgs()  # the script's defaults: clipped loss, value clipping, advantage normalisation
    zeros, noise = torch.zeros(args.minibatch), torch.randn(4, args.minibatch)
    loss_fn = torch.compile(ppo_loss) if variant == "compile" else ppo_loss

    def update_step():
        idx = torch.randint(0, len(frames), (args.minibatch,))
        obs = frames[idx]
        if variant == "channels-last":
            obs = obs.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            mb = {"obs": obs, "actions": actions[idx], "starts": zeros, "logprobs": noise[0], "advantages": noise[1]}
            mb |= {"values": noise[2], "returns": noise[3]}
            loss = loss_fn(agent, script_args, mb, None, script_args.clip_coef, script_args.kl_coef)[0]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        optimizer.step()

    update_step(), update_step()  # warm-up (and compilation)
    started = time.perf_counter()
    for _ in range(args.steps):
        update_step()
    update_seconds = (time.perf_counter() - started) / args.steps
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
        agent.get_action_and_value(frames[:8])
        started = time.perf_counter()
        for _ in range(50):
            agent.get_action_and_value(frames[:8])
    return update_seconds, (time.perf_counter() - started) / 50


def main(args: Args) -> None:
    flops = 3 * forward_flops(Agent(ScriptArgs(frame_stack=4, frame_size=84), num_actions=4)) * args.minibatch
    print(
        f"{torch.get_num_threads()} torch threads; "
        f"one update step of {args.minibatch} samples = {flops / 1e9:.1f} GFLOP"
    )
    print("| variant | update step | GFLOP/s | rollout forward (8 envs) |")
    print("|---|---|---|---|")
    for variant in args.variants:
        update_seconds, forward_seconds = time_variant(variant, args)
        print(
            f"| {variant} | {update_seconds * 1e3:.0f} ms | {flops / update_seconds / 1e9:.0f} "
            f"| {forward_seconds * 1e3:.2f} ms |",
            flush=True,
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
