"""PPO for Atari (pixels, Discrete actions) on the Arcade Learning Environment, or any image env, in one file.

    python ppo_atari.py --env-id BreakoutNoFrameskip-v4
    python ppo_atari.py --env-id PongNoFrameskip-v4 --env-backend ale   # ale-py's C++ vector env
    python ppo_atari.py --env-id CarRacing-v3 --env-kwargs continuous=False   # an image env outside the ALE
    torchrun --standalone --nproc_per_node 2 ppo_atari.py --env-id BreakoutNoFrameskip-v4   # 2 data-parallel workers

Defaults reproduce CleanRL's ppo_atari.py (baselines' ppo2 with the DeepMind wrappers); "ours" marks those that do not.
Two back ends give the same observations and episode accounting: `gymnasium` (the baselines wrappers below) and `ale`
(ale-py's multithreaded AtariVectorEnv); their trajectories differ in details (docs/flags.md), so a model is evaluated
on the back end it trained on. Frames stay uint8 until the network. Read it top to bottom; run control can wait.

DETAIL MAP: "The 37 Implementation Details of PPO" (Huang et al., 2022), detail -> flag -> where
   1  vectorized environments          --num-envs --num-steps --env-backend   make_envs, collect_rollout
   2  orthogonal init, constant bias   --ortho-init                           layer_init
   3  Adam epsilon                     --adam-eps                             main
   4  learning-rate annealing          --anneal-lr --learning-rate            train
   5  GAE                              --gae --gamma --gae-lambda             compute_advantages
   6  shuffled minibatches, K epochs   --num-minibatches --update-epochs      update, minibatches
   7  advantage normalisation          --norm-adv                             ppo_loss
   8  clipped surrogate objective      --clip-coef                            clipped_policy_loss
   9  value-function loss clipping     --clip-vloss                           value_loss
  10  overall loss, entropy bonus      --ent-coef --vf-coef                   ppo_loss
  11  global gradient clipping         --max-grad-norm                        update
  12  debug variables                  (logged: approx_kl, clipfrac, ...)     update, train
  13  separate or shared networks      --shared-network                       Agent
  14  no-op reset                      --noop-max                             NoopReset (ale: noop_max)
  15  frame skip with max-pooling      --frame-skip                           wrap_atari (ale: maxpool)
  16  a lost life ends an episode      --episodic-life                        EpisodicLife, GameScores
  17  FIRE on reset                    --fire-reset                           FireReset (ale: use_fire_reset)
  18  grayscale, resized frames        --frame-size                           WarpFrame
  19  reward clipping to its sign      --clip-reward                          collect_rollout
  20  frame stacking                   --frame-stack                          wrap_atari (ale: stack_num)
  21  shared Nature-CNN                --shared-network                       Agent
  22  pixels scaled to [0, 1]          --scale-obs                            Agent.pixels
  32  LSTM init                        --recurrent --ortho-init               lstm_init
  33  LSTM state starts at zero        --recurrent                            Agent.initial_state
  34  LSTM state reset at episode end  --recurrent                            lstm_sequence
  35  minibatches of whole sequences   --recurrent                            minibatches
  36  LSTM state of the rollout start  --recurrent --lstm-hidden-size         collect_rollout, update
  aux early stop on approx KL          --target-kl --kl-stop                  update
  aux clip-range annealing             --anneal-clip                          train
  aux PPO-Penalty (adaptive KL)        --loss kl-penalty --kl-coef --kl-target kl_penalty_policy_loss
  ours bootstrap at time limits        --bootstrap-truncation                 compute_advantages
"""

import ast
import os
import random
import signal
import time
from contextlib import closing, suppress
from dataclasses import dataclass, make_dataclass
from typing import Literal, Optional

if __name__ == "__main__":  # Ctrl-C while torch loads (seconds): stop quietly, not with a traceback of its imports
    signal.signal(signal.SIGINT, signal.SIG_DFL)
import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

gym.register_envs(ale_py)


# ==== Arguments: the algorithm's flags (fixed for a run's life), then run control (may change on resume) ====


@dataclass
class AlgorithmArgs:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of the experiment, part of the run name runs/<env>__<exp>__<seed>__<time>"""
    seed: int = 1
    """seed of python, numpy, torch and the environments"""
    torch_deterministic: bool = True
    """make torch deterministic (torch.backends.cudnn.deterministic)"""
    # Environment
    env_id: str = "BreakoutNoFrameskip-v4"
    """an ale-py game (PongNoFrameskip-v4, ALE/Pong-v5), or an env of image observations and Discrete actions"""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE arguments of gym.make, each VALUE a Python literal or else a string (e.g. continuous=False)"""
    env_backend: Literal["gymnasium", "ale"] = "gymnasium"
    """gymnasium: vector env of the wrappers in this file; ale: ale-py's C++ AtariVectorEnv"""
    num_envs: int = 8
    """detail 1: parallel environments (N), per worker under torchrun"""
    num_steps: int = 128
    """detail 1: steps per env per rollout (M); the batch is N x M (x workers under torchrun)"""
    bootstrap_truncation: bool = True
    """on a time-limit truncation, bootstrap with V(final obs) (ours; off reproduces CleanRL)"""
    # Atari details
    noop_max: int = 30
    """detail 14: up to this many no-ops after a reset (a random number from 1); 0 disables (ALE games only)"""
    frame_skip: int = 4
    """detail 15: repeat each action this many frames, max-pool the last two, sum the rewards"""
    episodic_life: bool = True
    """detail 16: a lost life ends the training episode; the game resets only when it is over (ALE games only)"""
    fire_reset: bool = True
    """detail 17: press FIRE after a reset in ALE games that have it (gymnasium back end: after a lost life too)"""
    frame_size: int = 84
    """detail 18: grayscale frames resized to frame_size x frame_size"""
    clip_reward: float = 1.0
    """detail 19: train on rewards clipped to [-c, c]: 1 is the sign of Atari's integer rewards (0: off; logs: raw)"""
    frame_stack: Optional[int] = None
    """detail 20: stack the last frames into one observation (None: 4, or 1 with --recurrent, as in CleanRL)"""
    shared_network: bool = True
    """detail 21: one Nature-CNN trunk for policy and value (off: two trunks)"""
    scale_obs: bool = True
    """detail 22: scale pixels to [0, 1] inside the network"""
    # Network
    ortho_init: bool = True
    """detail 2: orthogonal weights (gain sqrt 2, policy head 0.01, value head 1), zero biases"""
    recurrent: bool = False
    """details 32-36: an LSTM after the CNN, its state carried across steps (off: feed-forward)"""
    lstm_hidden_size: int = 128
    """size of the LSTM's hidden and cell state, with --recurrent"""
    # Optimisation
    learning_rate: float = 2.5e-4
    """detail 4: Adam learning rate (the start value when annealed)"""
    anneal_lr: bool = True
    """detail 4: anneal the learning rate linearly to 0"""
    adam_eps: float = 1e-5
    """detail 3: Adam epsilon"""
    gae: bool = True
    """detail 5: GAE advantages; off: discounted returns bootstrapped at the segment end"""
    gamma: float = 0.99
    """detail 5: discount factor"""
    gae_lambda: float = 0.95
    """detail 5: GAE lambda"""
    num_minibatches: int = 4
    """detail 6: minibatches per epoch (must divide N x M)"""
    update_epochs: int = 4
    """detail 6: passes over the batch per update (K)"""
    norm_adv: bool = True
    """detail 7: normalise advantages per minibatch"""
    clip_coef: float = 0.1
    """detail 8: surrogate clipping coefficient epsilon (also the value clip range)"""
    anneal_clip: bool = False
    """auxiliary: anneal the clipping coefficient linearly to 0, like the learning rate"""
    clip_vloss: bool = True
    """detail 9: clip the value loss around the rollout's values"""
    ent_coef: float = 0.01
    """detail 10: entropy bonus coefficient"""
    vf_coef: float = 0.5
    """detail 10: value loss coefficient"""
    max_grad_norm: float = 0.5
    """detail 11: global gradient-norm clip"""
    target_kl: Optional[float] = None
    """auxiliary: stop the update early when approx KL exceeds this (None: never)"""
    kl_stop: Literal["epoch", "minibatch"] = "epoch"
    """auxiliary: check --target-kl after each epoch (CleanRL) or before each minibatch step at 1.5x (SB3)"""
    loss: Literal["clip", "kl-penalty"] = "clip"
    """policy objective: clipped surrogate, or PPO-Penalty with adaptive KL coefficient"""
    kl_coef: float = 1.0
    """PPO-Penalty: initial KL coefficient beta"""
    kl_target: float = 0.01
    """PPO-Penalty: target KL; beta x2 when KL > 1.5 target, /2 when KL < target / 1.5"""


@dataclass
class RunControlArgs:
    # Length, hardware, logging
    total_timesteps: int = 10000000
    """environment steps (agent decisions) of the whole run, summed over all envs (and all workers under torchrun)"""
    vector_mode: Literal["sync", "async"] = "sync"
    """detail 1: gymnasium back end: step the envs in this process (sync) or one subprocess each (async)"""
    cuda: bool = True
    """use CUDA when it is available"""
    torch_threads: int = 0
    """torch's CPU threads (0: torch's default, every core: the CNN's update uses them)"""
    compile: bool = False
    """torch.compile the agent's get_action_and_value (~10 s of compiling first; see docs/speed.md)"""
    track: bool = False
    """also log to Weights & Biases (WANDB_MODE=offline logs without a network)"""
    wandb_project_name: str = "ppo37"
    """Weights & Biases project"""
    wandb_entity: Optional[str] = None
    """Weights & Biases entity (team); None uses your default"""
    # Checkpoints, evaluation, video
    save_model: bool = False
    """write a checkpoint to runs/<run_name>/<exp_name>.pt at the end, then evaluate it (--eval-episodes)"""
    checkpoint_every: int = 0
    """also write a checkpoint every this many iterations to runs/<run_name>/checkpoints/ (0: never)"""
    keep_checkpoints: int = 3
    """how many of the latest checkpoints to keep in runs/<run_name>/checkpoints/"""
    resume: Optional[str] = None
    """continue the run of this checkpoint, with the flags it saved (flags given must match, except run control)"""
    eval_every: int = 0
    """evaluate every this many iterations (0: never), log eval/*, keep the best model as runs/<run_name>/best.pt"""
    eval_episodes: int = 10
    """full games of the argmax policy per evaluation (--save-model, --eval-every, --eval-checkpoint; seed + 10000)"""
    eval_checkpoint: Optional[str] = None
    """only evaluate this checkpoint (no training), print its mean return and write the returns as JSON (--eval-json)"""
    eval_json: Optional[str] = None
    """where --eval-checkpoint writes returns, mean, std, checkpoint and seed (None: next to it, <name>.eval.json)"""
    capture_video: bool = False
    """record games of the first env to videos/<run_name>/ (gymnasium back end; evaluation in videos/<run_name>/eval)"""


@dataclass
class Args(RunControlArgs, AlgorithmArgs):
    def __post_init__(self):
        if self.frame_stack is None:  # memory comes from the LSTM instead of the stack
            self.frame_stack = 1 if self.recurrent else 4


RUN_CONTROL = set(RunControlArgs.__dataclass_fields__)  # may change on --resume; the other flags must match


# ==== Environment: the baselines wrappers (details 14-18, 20; 15 and 20 gymnasium's) or ale-py's vector env ====


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr with exit code 2."""


class NoopReset(gym.Wrapper):
    """detail 14: after a reset, a random number (1..noop_max) of no-op actions."""

    def __init__(self, env: gym.Env, noop_max: int):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.unwrapped.np_random.integers(1, self.noop_max + 1)):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class EpisodicLife(gym.Wrapper):
    """detail 16: a lost life ends the training episode, but the game goes on: only a game over resets the emulator."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.unwrapped.ale.lives()
        terminated, self.lives = terminated or 0 < lives < self.lives, lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if not self.game_over:  # a lost life: one no-op step, and the game goes on
            obs, _, terminated, truncated, info = self.env.step(0)
            self.game_over = terminated or truncated  # the no-op step ended the game: reset it (as SB3 does)
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """detail 17: press FIRE (then action 2, as baselines does) after each reset, for games that wait for FIRE."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class WarpFrame(gym.ObservationWrapper):
    """detail 18: RGB (or gray) -> grayscale -> size x size (area interpolation, as baselines)."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, frame):
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA)


def wrap_atari(env: gym.Env, args: Args) -> gym.Env:
    """The baselines stack, innermost first (rewards stay raw: the script clips them, detail 19)."""
    ale = hasattr(env.unwrapped, "ale")  # no-op starts, lives and FIRE need the ALE: other envs go without
    if args.noop_max > 0 and ale:
        env = NoopReset(env, args.noop_max)
    if args.frame_skip > 1:  # detail 15: repeat the action, sum the rewards, max-pool the last two frames (flicker)
        env = gym.wrappers.MaxAndSkipObservation(env, args.frame_skip)
    if args.episodic_life and ale:
        env = EpisodicLife(env)
    if args.fire_reset and ale and "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = WarpFrame(env, args.frame_size)
    return gym.wrappers.FrameStackObservation(env, args.frame_stack)  # detail 20: [k, H, W], k copies after a reset


def make_gym_env(args: Args, **kwargs) -> gym.Env:
    """gym.make of --env-id with --env-kwargs; an ALE game without frame skip (the wrappers skip) or sticky actions."""
    for key, _, value in (pair.partition("=") for pair in args.env_kwargs):
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # a word: the string itself
            kwargs[key] = value
    if ":" not in args.env_id and gym.spec(args.env_id).entry_point == "ale_py.env:AtariEnv":  # (no spec for module:Id)
        kwargs = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False} | kwargs
    return gym.make(args.env_id, **kwargs)


def make_env(args: Args, video_folder: Optional[str] = None, signalled=None):
    def thunk():
        env = make_gym_env(args, render_mode=None if video_folder is None else "rgb_array")
        if video_folder is not None:  # whole games (0, 1, 8, 27, ...: gymnasium's cubic schedule), every frame
            env = gym.wrappers.RecordVideo(env, video_folder, disable_logger=True)
            cubic = env.episode_trigger  # and none begun after a signal (run control sets `signalled`)
            env.episode_trigger = lambda game: cubic(game) and not (signalled and signalled.is_set())
        return wrap_atari(env, args)

    return thunk


def make_envs(args: Args, video_folder: Optional[str] = None, signalled=None) -> gym.vector.VectorEnv:
    """N envs with same-step autoreset (an ended episode's final observation in info["final_obs"]) and info["lives"]."""
    if args.env_backend == "ale":
        settings = {"frameskip": args.frame_skip, "maxpool": args.frame_skip >= 2, "noop_max": args.noop_max}
        settings |= {"use_fire_reset": args.fire_reset, "stack_num": args.frame_stack, "repeat_action_probability": 0}
        settings |= {"img_height": args.frame_size, "img_width": args.frame_size, "num_envs": args.num_envs}
        # ale's episodic_life resets the game at a life loss (baselines does not): only report it; rewards stay raw
        settings |= {"episodic_life": False, "life_loss_info": args.episodic_life, "reward_clipping": False}
        game, same_step = gym.spec(args.env_id).kwargs["game"], gym.vector.AutoresetMode.SAME_STEP  # game: breakout
        return ale_py.vector_env.AtariVectorEnv(game=game, autoreset_mode=same_step, **settings)
    vector_env = gym.vector.SyncVectorEnv if args.vector_mode == "sync" else gym.vector.AsyncVectorEnv
    thunks = [make_env(args, video_folder if i == 0 else None, signalled) for i in range(args.num_envs)]
    return vector_env(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class GameScores:
    """Each sub-env's current game: its raw score and length (agent steps) summed across lives, as published scores."""

    def __init__(self, lives: np.ndarray):  # lives [N], as the reset reported them
        self.lives, self.scores, self.lengths = np.array(lives), np.zeros(len(lives)), np.zeros(len(lives), dtype=int)

    def update(self, raw_rewards, terminated, truncated, info) -> list[tuple[float, int]]:
        """One vector step; info["lives"] as reported after it (after any reset). -> [(score, length)] of the games
        that ended: an episode end without a life lost (a reset restores the lives; games without lives: none)."""
        lives = info.get("lives", self.lives)  # (envs outside the ALE report none)
        self.scores += raw_rewards
        self.lengths += 1
        over, self.lives = truncated | (terminated & ~(lives < self.lives)), np.array(lives)
        ended = [(float(self.scores[i]), int(self.lengths[i])) for i in np.flatnonzero(over)]
        self.scores[over], self.lengths[over] = 0.0, 0
        return ended


# ==== Agent ====


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0, ortho: bool = True) -> nn.Module:
    # detail 2: orthogonal init with a per-layer gain and zero bias (off: PyTorch's default init)
    if ortho:
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
    return layer


def lstm_init(lstm: nn.LSTM, ortho: bool = True) -> nn.LSTM:
    # detail 32: orthogonal weights with gain 1 and zero biases (off: PyTorch's default init)
    if ortho:
        for name, param in lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.constant_(param, 0.0)
    return lstm


def lstm_sequence(lstm: nn.LSTM, features: torch.Tensor, state: tuple, starts: torch.Tensor):
    """Run `lstm` over N env sequences of T steps from `state` (h, c), each [1, N, H], restarting from zeros at episode
    starts: features [T * N, F] time-major, starts [T * N] (1.0: an episode's first) -> outputs [T * N, H], state."""
    num_envs = state[0].shape[1]
    features = features.reshape(-1, num_envs, features.shape[-1])
    starts = starts.reshape(-1, num_envs)
    h, c = state
    # One LSTM call per stretch of steps in which no episode starts: exact, and far fewer calls than one per step
    cuts = [0, *(torch.nonzero(starts[1:].any(-1)).flatten() + 1).tolist(), len(starts)]
    outputs = []
    for first, end in zip(cuts[:-1], cuts[1:]):
        keep = (1.0 - starts[first]).view(1, -1, 1)  # detail 34: a new episode starts from zeros
        output, (h, c) = lstm(features[first:end], (keep * h, keep * c))
        outputs.append(output)
    return torch.cat(outputs).reshape(-1, lstm.hidden_size), (h, c)


def select_envs(state: Optional[tuple], envs) -> Optional[tuple]:
    """The LSTM state (h, c), each [L, N, H], of the envs `envs` (an index or mask over N); None stays None."""
    return None if state is None else (state[0][:, envs], state[1][:, envs])


class Agent(nn.Module):
    def __init__(self, args: Args, num_actions: int):
        super().__init__()
        self.shared_network, self.scale_obs, self.recurrent = args.shared_network, args.scale_obs, args.recurrent
        conv_out = 64 * (((args.frame_size - 8) // 4 + 1 - 4) // 2 + 1 - 2) ** 2  # after the three convolutions
        ortho_init = args.ortho_init

        def trunk():  # detail 21: the Nature-CNN
            return nn.Sequential(
                layer_init(nn.Conv2d(args.frame_stack, 32, 8, stride=4), ortho=ortho_init),
                nn.ReLU(),
                layer_init(nn.Conv2d(32, 64, 4, stride=2), ortho=ortho_init),
                nn.ReLU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1), ortho=ortho_init),
                nn.ReLU(),
                nn.Flatten(),
                layer_init(nn.Linear(conv_out, 512), ortho=ortho_init),
                nn.ReLU(),
            )

        self.actor_trunk = trunk()
        self.critic_trunk = self.actor_trunk if self.shared_network else trunk()
        features = args.lstm_hidden_size if self.recurrent else 512
        if self.recurrent:  # details 32-36: an LSTM after each trunk (one LSTM when the trunk is shared)
            self.actor_lstm = lstm_init(nn.LSTM(512, features), ortho_init)
            self.critic_lstm = self.actor_lstm if self.shared_network else lstm_init(nn.LSTM(512, features), ortho_init)
        self.actor_head = layer_init(nn.Linear(features, num_actions), std=0.01, ortho=ortho_init)
        self.critic_head = layer_init(nn.Linear(features, 1), std=1.0, ortho=ortho_init)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 frames [B, k, H, W] -> float; detail 22: scaled to [0, 1] here, not in the buffer."""
        return x.float() / 255.0 if self.scale_obs else x.float()

    def initial_state(self, num_envs: int, device=None) -> Optional[tuple]:
        """detail 33: the zero LSTM state (h, c), each [L, N, H], L = 1 shared LSTM or 2 (actor's, critic's);
        None when feed-forward, so the training loop needs no recurrent branch."""
        if not self.recurrent:
            return None
        shape = (1 if self.shared_network else 2, num_envs, self.actor_lstm.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def get_value(self, x: torch.Tensor, lstm_state=None, starts=None) -> torch.Tensor:
        hidden = self.critic_trunk(self.pixels(x))
        if self.recurrent:  # the critic's state is the last of the L
            hidden, _ = lstm_sequence(self.critic_lstm, hidden, (lstm_state[0][-1:], lstm_state[1][-1:]), starts)
        return self.critic_head(hidden).squeeze(-1)

    def get_action_and_value(self, x, action=None, lstm_state=None, starts=None, deterministic=False):
        """x uint8 [B, k, H, W] -> action [B], logprob [B], entropy [B], value [B], lstm_state. Samples an action (the
        most probable if `deterministic`) when `action` is None, else scores it. Recurrent: x holds N sequences
        time-major (B = T * N), from lstm_state, starts [B] marks episode starts; -> the state after them."""
        x = self.pixels(x)
        hidden = self.actor_trunk(x)
        critic_hidden = hidden if self.shared_network else self.critic_trunk(x)
        if self.recurrent:
            h, c = lstm_state
            hidden, (h_actor, c_actor) = lstm_sequence(self.actor_lstm, hidden, (h[:1], c[:1]), starts)
            if self.shared_network:
                critic_hidden, lstm_state = hidden, (h_actor, c_actor)
            else:
                critic_hidden, critic_state = lstm_sequence(self.critic_lstm, critic_hidden, (h[1:], c[1:]), starts)
                lstm_state = torch.cat([h_actor, critic_state[0]]), torch.cat([c_actor, critic_state[1]])
        value = self.critic_head(critic_hidden).squeeze(-1)
        log_probs = self.actor_head(hidden).log_softmax(-1)
        if action is None and deterministic:
            action = log_probs.argmax(-1)
        elif action is None:  # Gumbel-max: argmax(log p + Gumbel noise) is a sample of Categorical(p)
            action = (log_probs - torch.log(-torch.log(torch.rand_like(log_probs)))).argmax(-1)
        logprob = log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return action, logprob, entropy, value, lstm_state


# ==== PPO math: pure functions of tensors (tested in tests/) ====


def compute_advantages(
    rewards, values, next_value, terminations, truncations, final_values, gamma, gae_lambda, gae, bootstrap_truncation
):
    """Advantages and returns [T, N] of one rollout, in NumPy (T tiny steps: NumPy's cost a fraction of torch's).
    rewards, values, terminations, truncations, final_values [T, N] of step t's transition (final_values[t]: V(final
    obs) where step t was truncated); next_value [N]: V(obs after step T-1)."""
    num_steps = rewards.shape[0]
    ended = np.maximum(terminations, truncations)  # the episode ended at step t: no credit flows back past it
    # Value of the state step t led to: the next stored value while the episode goes on; at a time
    # limit, V(final obs) if bootstrapping truncation; 0 after a true termination (or any end in CleanRL).
    next_values = np.concatenate([values[1:], next_value[None]])
    end_values = final_values * truncations * (1 - terminations) if bootstrap_truncation else np.zeros_like(values)
    bootstrap = np.where(ended.astype(bool), end_values, next_values)
    advantages, returns = np.zeros_like(rewards), np.zeros_like(rewards)
    if gae:
        # detail 5: A_t = delta_t + gamma * lambda * A_{t+1}, cut where the episode ended
        deltas = rewards + gamma * bootstrap - values  # [T, N], every step at once
        decays = gamma * gae_lambda * (1 - ended)
        last_gae = np.zeros_like(next_value)
        for t in reversed(range(num_steps)):
            last_gae = deltas[t] + decays[t] * last_gae
            advantages[t] = last_gae
        returns = advantages + values
    else:
        # discounted returns, bootstrapped at the segment end (and at time limits when enabled)
        next_return = next_value
        for t in reversed(range(num_steps)):
            next_return = rewards[t] + gamma * np.where(ended[t].astype(bool), end_values[t], next_return)
            returns[t] = next_return
        advantages = returns - values
    return advantages, returns


def clipped_policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """detail 8: -min(r A, clip(r, 1-eps, 1+eps) A), averaged; ratio, advantages [B]."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    return torch.max(unclipped, clipped).mean()


def kl_penalty_policy_loss(ratio, logratio, advantages, kl_coef: float) -> torch.Tensor:
    """PPO-Penalty: -r A + beta KL(old || new), with KL estimated per sample as (r - 1) - log r."""
    kl = ((ratio - 1) - logratio).mean()
    return -(advantages * ratio).mean() + kl_coef * kl


def adapt_kl_coef(kl_coef: float, kl: float, kl_target: float) -> float:
    """PPO paper, section 4: beta x2 when KL > 1.5 target, /2 when KL < target / 1.5."""
    if kl > 1.5 * kl_target:
        return kl_coef * 2.0
    if kl < kl_target / 1.5:
        return kl_coef / 2.0
    return kl_coef


def value_loss(new_values, old_values, returns, clip_coef: float, clip_vloss: bool = True) -> torch.Tensor:
    """0.5 * squared error; detail 9: the max of the unclipped and the clipped error."""
    unclipped = (new_values - returns) ** 2
    if not clip_vloss:
        return 0.5 * unclipped.mean()
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_coef, clip_coef)
    clipped = (clipped_values - returns) ** 2
    return 0.5 * torch.max(unclipped, clipped).mean()


def ppo_loss(agent: Agent, args: Args, mb: dict, lstm_state, clip_coef: float, kl_coef: float):
    """The loss of one minibatch of B samples (`mb`: the batch's entries at its indices, [B, ...]; lstm_state: the
    state its sequences started in, when recurrent) -> loss, pg_loss, v_loss, entropy_loss (scalars) and logratio,
    ratio [B] of new to old policy."""
    _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(mb["obs"], mb["actions"], lstm_state, mb["starts"])
    logratio = newlogprob - mb["logprobs"]
    ratio = logratio.exp()
    advantages = mb["advantages"]
    if args.norm_adv:  # detail 7
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    if args.loss == "clip":
        pg_loss = clipped_policy_loss(ratio, advantages, clip_coef)
    else:
        pg_loss = kl_penalty_policy_loss(ratio, logratio, advantages, kl_coef)
    v_loss = value_loss(newvalue, mb["values"], mb["returns"], clip_coef, args.clip_vloss)
    entropy_loss = entropy.mean()
    loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss  # detail 10
    return loss, pg_loss, v_loss, entropy_loss, logratio, ratio


def minibatches(order: np.ndarray, num_minibatches: int, num_steps: int, num_envs: int, recurrent: bool):
    """Split `order` (a permutation of the T * N flat indices, or of the N envs when recurrent) into
    minibatches; yields (envs or None, flat indices). Recurrent: all T steps of each env, time-major."""
    for part in np.split(order, num_minibatches):
        if recurrent:
            yield part, (np.arange(num_steps)[:, None] * num_envs + part).reshape(-1)
        else:
            yield None, part


def explained_variance(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    """detail 12: 1 - Var[y - y_pred] / Var[y]; nan when y is constant."""
    var_y = np.var(y_true)
    return np.nan if var_y == 0 else float(1 - np.var(y_true - y_pred) / var_y)


def all_mean_(x: torch.Tensor) -> torch.Tensor:
    """Data parallel (torchrun: workers with their own envs step with the mean gradient): x, overwritten with its mean
    over all workers; in one process, x as it is."""
    if dist.is_initialized():
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


# ==== Training: CleanRL's phases as functions (rollout, bootstrap and GAE, flatten, K-epoch update), one loop ====


class Rollout:
    """The rollout buffers, [T, N, ...] (entry t: the transition taken at step t), and what the policy acts on next
    (`next_*`): frames [N, k, H, W] uint8, 1.0 where an episode starts (a lost life too) [N], the LSTM state or None."""

    def __init__(self, args: Args, obs_shape: tuple, device: torch.device):
        shape = (args.num_steps, args.num_envs)
        self.obs = torch.zeros((*shape, *obs_shape), dtype=torch.uint8, device=device)  # a quarter of float32's memory
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        # what the envs return stays in NumPy until the rollout ends: one conversion per rollout, not per step
        self.rewards = np.zeros(shape, np.float32)  # clipped to their sign (detail 19)
        self.terminations, self.truncations = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.values = torch.zeros(shape, device=device)
        self.final_values = torch.zeros(shape, device=device)  # V(final obs) where step t hit a time limit
        self.starts = torch.zeros(shape, device=device)  # 1.0 where obs[t] is an episode's first
        self.lstm_state = self.next_obs = self.next_start = self.next_lstm_state = None  # lstm_state: detail 36


def collect_rollout(envs, agent: Agent, rollout: Rollout, scores: GameScores, args: Args, global_step, world_size):
    """detail 1: num_steps steps of every env with the current policy; fills `rollout` -> the global step (which grows
    by N x workers each step) and the games that ended, (global step, raw score, length)."""
    device, games = rollout.obs.device, []
    # detail 36: the LSTM state before the rollout, from which the update re-runs the sequences (None: feed-forward)
    rollout.lstm_state = rollout.next_lstm_state and tuple(s.clone() for s in rollout.next_lstm_state)
    for step in range(args.num_steps):
        global_step += args.num_envs * world_size
        rollout.obs[step], rollout.starts[step] = rollout.next_obs, rollout.next_start
        with torch.inference_mode():
            action, logprob, _, value, rollout.next_lstm_state = agent.get_action_and_value(
                rollout.next_obs, None, rollout.next_lstm_state, rollout.next_start
            )
        rollout.values[step], rollout.actions[step], rollout.logprobs[step] = value, action, logprob

        next_obs, raw_reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        # detail 19: train on the reward clipped to [-1, 1] (game rewards are integers: their sign); log raw scores
        reward = np.clip(raw_reward, -args.clip_reward, args.clip_reward) if args.clip_reward > 0 else raw_reward
        rollout.rewards[step], rollout.terminations[step], rollout.truncations[step] = reward, terminated, truncated
        rollout.next_start = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
        rollout.next_obs = torch.as_tensor(next_obs, device=device)
        games += [(global_step, *game) for game in scores.update(raw_reward, terminated, truncated, info)]

        time_limited = truncated & ~terminated  # not a failure: value the final observation to bootstrap from it (ours)
        if args.bootstrap_truncation and time_limited.any():
            final_obs = torch.as_tensor(np.stack(info["final_obs"][time_limited]), device=device)
            final_state = select_envs(rollout.next_lstm_state, time_limited)  # recurrent: the state that just acted
            with torch.inference_mode():
                final_values = agent.get_value(final_obs, final_state, torch.zeros(len(final_obs), device=device))
            rollout.final_values[step, time_limited] = final_values
    return global_step, games


@torch.no_grad()
def bootstrap_and_gae(agent: Agent, rollout: Rollout, args: Args):
    """detail 5: -> advantages, returns [T, N] (on the device), bootstrapped with V(obs after the last step)."""
    next_value = agent.get_value(rollout.next_obs, rollout.next_lstm_state, rollout.next_start).cpu().numpy()
    r, values, final_values = rollout, rollout.values.cpu().numpy(), rollout.final_values.cpu().numpy()
    arrays = (r.rewards, values, next_value, r.terminations, r.truncations, final_values)  # ours: V(final obs)
    advantages, returns = compute_advantages(*arrays, args.gamma, args.gae_lambda, args.gae, args.bootstrap_truncation)
    rollout.final_values.zero_()
    return torch.from_numpy(advantages).to(rollout.values.device), torch.from_numpy(returns).to(rollout.values.device)


def flatten(rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
    """[T, N, ...] -> the batch [T * N, ...], time-major (recurrent: whole sequences), copied (a fork may keep it)."""
    layout = torch.channels_last if rollout.obs.is_cpu else torch.contiguous_format  # CPU: updates 1.3-1.5x faster
    obs = rollout.obs.flatten(0, 1).clone(memory_format=layout)
    batch = {key: getattr(rollout, key).reshape(-1).clone() for key in ("actions", "starts", "logprobs", "values")}
    return batch | {"obs": obs, "advantages": advantages.reshape(-1), "returns": returns.reshape(-1)}


def update(agent: Agent, optimizer, batch: dict, lstm_state, args: Args, clip_coef: float, kl_coef: float) -> dict:
    """detail 6: K epochs over the batch in shuffled minibatches, one Adam step each; -> statistics of the update
    (detail 12) by log tag. Raises FloatingPointError before a step with a non-finite loss or gradient."""
    parameters = list(agent.parameters())
    order = np.arange(args.num_envs if args.recurrent else len(batch["values"]))  # detail 35, recurrent: whole envs
    clipfracs, minibatch_steps, stop_early = [], 0, False
    for _epoch in range(args.update_epochs):
        np.random.shuffle(order)
        for mb_envs, mb_inds in minibatches(order, args.num_minibatches, args.num_steps, args.num_envs, args.recurrent):
            mb_inds = torch.from_numpy(mb_inds)  # one index tensor for every field
            mb = {key: value[mb_inds] for key, value in batch.items()}
            mb_state = select_envs(lstm_state, mb_envs)  # detail 36, recurrent: from the state its rollout started in
            loss, pg_loss, v_loss, entropy_loss, logratio, ratio = ppo_loss(
                agent, args, mb, mb_state, clip_coef, kl_coef
            )

            with torch.no_grad():  # detail 12: KL estimators from http://joschu.net/blog/kl-approx.html
                old_approx_kl = (-logratio).mean()
                approx_kl = all_mean_(((ratio - 1) - logratio).mean())  # over all workers: they stop together
                clipfracs.append(((ratio - 1.0).abs() > clip_coef).float().mean().item())
            if args.target_kl is not None and args.kl_stop == "minibatch" and approx_kl > 1.5 * args.target_kl:
                stop_early = True  # SB3: skip this step and end the update
                break

            optimizer.zero_grad()
            loss.backward()
            for p in parameters:  # torchrun: every worker steps with the mean gradient
                all_mean_(p.grad)
            loss = all_mean_(loss.detach())
            grad_norm = nn.utils.clip_grad_norm_(parameters, args.max_grad_norm)  # detail 11
            if not torch.isfinite(loss + grad_norm):  # guard: one NaN would spread to every weight
                quantity, value = ("loss", loss) if not torch.isfinite(loss) else ("gradient norm", grad_norm)
                raise FloatingPointError(f"the {quantity} is {value.item()}")
            optimizer.step()
            minibatch_steps += 1

        if stop_early or (args.target_kl is not None and args.kl_stop == "epoch" and approx_kl > args.target_kl):
            break

    losses = {"value_loss": v_loss, "policy_loss": pg_loss, "entropy": entropy_loss, "old_approx_kl": old_approx_kl}
    stats = {f"losses/{tag}": value.item() for tag, value in (losses | {"approx_kl": approx_kl}).items()}
    stats |= {"losses/clipfrac": np.mean(clipfracs), "charts/minibatch_steps": minibatch_steps}
    if args.loss == "kl-penalty":  # PPO-Penalty: KL(old || new) on the whole batch after the update, to adapt beta
        with torch.no_grad():
            batch_size, kl_after = len(batch["values"]), 0.0
            order = np.arange(args.num_envs if args.recurrent else batch_size)  # in minibatches: pixels are large
            for envs, inds in minibatches(order, args.num_minibatches, args.num_steps, args.num_envs, args.recurrent):
                obs, actions, starts = batch["obs"][inds], batch["actions"][inds], batch["starts"][inds]
                _, newlogprob, _, _, _ = agent.get_action_and_value(obs, actions, select_envs(lstm_state, envs), starts)
                logratio = newlogprob - batch["logprobs"][inds]
                kl_after += ((logratio.exp() - 1) - logratio).sum().item() / batch_size
            stats["losses/kl_after_update"] = all_mean_(torch.tensor(kl_after, device=batch["values"].device)).item()
    return stats


@dataclass
class TrainState:
    """Everything a run continues from, saved whole in a checkpoint and restored whole on --resume: a change that
    adds state (a scheduler, a statistic) adds it here, to state_dict and load_state_dict."""

    agent: Agent
    optimizer: torch.optim.Optimizer
    kl_coef: float  # PPO-Penalty's beta
    global_step: int = 0
    iteration: int = 0  # the iteration in progress, or the last one done

    def state_dict(self) -> dict:
        name, key, *rest = np.random.get_state()  # numpy's key as a tensor: torch.load(weights_only=True) reads it
        rng = {"python": random.getstate(), "numpy": (name, torch.from_numpy(key.astype(np.int64)), *rest)}
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():  # a resumed GPU run must not replay the noise of its first iterations
            rng["cuda"] = torch.cuda.get_rng_state()
        steps = {"kl_coef": self.kl_coef, "global_step": self.global_step, "iteration": self.iteration, "rng": rng}
        return {"model": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(), **steps}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef, self.global_step, self.iteration = state["kl_coef"], state["global_step"], state["iteration"]
        random.setstate(state["rng"]["python"])
        name, key, *rest = state["rng"]["numpy"]
        np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])


def train(args: Args, envs, state: TrainState, device=torch.device("cpu"), rank: int = 0, world_size: int = 1):
    """The PPO loop, from the iteration after `state.iteration` to the last; advances `state` and yields, after each
    iteration, its statistics by log tag (detail 12) and the games that ended in it, (global step, score, length).
    It knows nothing of run control: `main` (or your own loop) logs, saves and stops around it."""
    agent, optimizer = state.agent, state.optimizer
    num_iterations = args.total_timesteps // (args.num_envs * args.num_steps * world_size)
    rollout = Rollout(args, envs.single_observation_space.shape, device)
    # env seeds differ per worker, and a resumed run starts new games, seeded apart from the first start's
    obs, info = envs.reset(seed=args.seed + (rank + world_size * state.iteration) * args.num_envs)
    scores = GameScores(info.get("lives", np.zeros(args.num_envs)))  # full-game raw scores, across lives and resets
    rollout.next_obs, rollout.next_start = torch.as_tensor(obs, device=device), torch.ones(args.num_envs, device=device)
    rollout.next_lstm_state = agent.initial_state(args.num_envs, device)  # detail 33
    for iteration in range(state.iteration + 1, num_iterations + 1):
        state.iteration = iteration
        frac = 1.0 - (iteration - 1.0) / num_iterations  # detail 4 (and clip annealing): linear decay to 0
        lr_now = frac * args.learning_rate if args.anneal_lr else args.learning_rate
        optimizer.param_groups[0]["lr"] = lr_now
        clip_now = frac * args.clip_coef if args.anneal_clip else args.clip_coef

        rollout_start = time.time()
        state.global_step, games = collect_rollout(envs, agent, rollout, scores, args, state.global_step, world_size)
        advantages, returns = bootstrap_and_gae(agent, rollout, args)
        batch = flatten(rollout, advantages, returns)
        update_start = time.time()
        logs = update(agent, optimizer, batch, rollout.lstm_state, args, clip_now, state.kl_coef)
        if args.loss == "kl-penalty":
            logs["charts/kl_coef"] = state.kl_coef
            state.kl_coef = adapt_kl_coef(state.kl_coef, logs["losses/kl_after_update"], args.kl_target)

        # Log (detail 12): the update's statistics, where the time went (rollout and GAE, then the update)
        explained = explained_variance(batch["values"].cpu().numpy(), batch["returns"].cpu().numpy())
        logs |= {"losses/explained_variance": explained, "charts/learning_rate": lr_now, "charts/clip_coef": clip_now}
        logs |= {"time/rollout_seconds": update_start - rollout_start}
        logs["time/update_seconds"] = time.time() - update_start
        yield logs, games


def main(args: Args) -> TrainState:
    """Train with the run control below (or only evaluate, with --eval-checkpoint); -> the final state."""
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)
    with Run(args) as run, closing(make_envs(args, run.video_folder, run.signalled)) as envs:  # checks, signals
        agent = Agent(args, int(envs.single_action_space.n)).to(run.device)
        if args.compile:  # the rollout and the loss call it: both compiled
            agent.get_action_and_value = torch.compile(agent.get_action_and_value)
        optimizer = torch.optim.Adam(agent.parameters(), args.learning_rate, eps=args.adam_eps, fused=True)  # detail 3
        state = TrainState(agent, optimizer, args.kl_coef)
        run.start(state)  # rank 0's weights to every worker, or the checkpoint's state (--resume); the writers
        for logs, games in train(args, envs, state, run.device, run.rank, run.world_size):
            if run.log(state, logs, games):  # TensorBoard, the console, checkpoints; True: a signal stops the run
                break
        run.finish(state)  # the --save-model checkpoint and its evaluation
    return state


# ==== Run control around `train`: not PPO, skip on a first read (README: "Your own loop" drops it) ====

import fcntl
import glob
import json
import multiprocessing
import resource
import shlex
import shutil
import sys
import threading
import warnings

import tyro
from torch.utils.tensorboard import SummaryWriter


class SignalStop(Exception):
    """SIGINT / SIGTERM (args[0]) that stops the run at once: a second one, or one with no iteration left to finish."""


def stop_at_once(signum, frame):
    raise SignalStop(signum)


class Run:
    """Around `train`: entering checks, joins workers, takes a run directory and the signals; start, log, finish."""

    def __init__(self, args: Args):
        self.args, self.world_size = args, int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's workers
        validate_args(args, self.world_size)
        self.checkpoint = args.resume and load_checkpoint(args.resume, "--resume")
        if self.checkpoint and (workers := len(self.checkpoint["rng"])) != self.world_size:  # RNGs: one set a worker
            launch = "python" if workers == 1 else f"torchrun with {workers} workers in all"
            raise UsageError(f"--resume: the checkpoint was written by {workers} worker(s); launch it with {launch}")
        self.rollout_bytes, self.rollout_flags = check_env(args)  # and the network's, where it grows with flags
        self.num_iterations = args.total_timesteps // (args.num_envs * args.num_steps * self.world_size)
        self.state = self.writer = self.wandb_run = self.evaluation = self.stop_signal = self.stopping = None
        saved, self.evaluating, self.best = self.checkpoint or {}, False, -np.inf  # totals go on across resumptions
        self.returns, self.episodes = saved.get("returns", torch.zeros(0)).tolist(), saved.get("episodes", 0)
        self.created, self.last_checkpoint, self.sps = time.time() - saved.get("wall_seconds", 0.0), args.resume, 0

    def __enter__(self) -> "Run":
        args, use_cuda = self.args, torch.cuda.is_available() and self.args.cuda
        self.rank, local = (int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])) if self.world_size > 1 else (0, 0)
        self.device = torch.device("cuda", local) if use_cuda else torch.device("cpu")  # torchrun: one GPU each
        self.world_size > 1 and dist.init_process_group("nccl" if use_cuda else "gloo")  # torchrun: join the group
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # or `ulimit -v`, or a GPU's free memory
        memory = min(memory, resource.getrlimit(resource.RLIMIT_AS)[0] % 2**64)  # (no limit: -1, so 2**64 - 1)
        memory = torch.cuda.mem_get_info(self.device)[0] if use_cuda else memory
        if self.rollout_bytes > memory:  # one line now, not an allocator's traceback later
            need = f"{self.rollout_bytes / 2**30:,.1f} GiB, more than the {memory / 2**30:,.1f} GiB of {self.device}"
            raise UsageError(f"{self.rollout_flags}: the rollout buffers need {need}; use smaller values")
        claimed = claim_run_dir(args, None) if self.rank == 0 and not self.checkpoint else (None, None)  # a new run
        self.name, self.lock = (self.checkpoint or {}).get("run_name") or self.gather(claimed[0])[0], claimed[1]
        self.video_folder = f"videos/{self.name}" if args.capture_video and self.rank == 0 else None  # rank 0's env 0
        self.signalled = multiprocessing.Event() if self.video_folder else None  # a signal sets it; sub-envs see it
        for seed in (random.seed, np.random.seed, torch.manual_seed):  # each worker: its own actions, minibatches
            seed(args.seed + self.rank)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        self.handlers = {signum: signal.signal(signum, self.request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        self.threads, self.excepthook = torch.get_num_threads(), threading.excepthook  # put back on leaving
        torch.set_num_threads(args.torch_threads or self.threads)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # until `start`: sub-envs leave Ctrl-C to the run
        threading.excepthook = lambda hook: None if issubclass(hook.exc_type, OSError) else self.excepthook(hook)
        return self

    def gather(self, obj) -> list:
        """obj of every worker, in rank order ([obj] in a single process)."""
        objects = [obj] * self.world_size
        dist.is_initialized() and dist.all_gather_object(objects, obj)
        return objects

    def request_stop(self, signum, frame):
        if self.stop_signal is not None or self.evaluating:
            raise SignalStop(signum)
        self.stop_signal = signum
        self.signalled and self.signalled.set()  # a recording under way ends with its episode, and no other begins
        if self.rank == 0:
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration (again: at once)", file=sys.stderr)

    def start(self, state: TrainState) -> None:
        """Rank 0's weights to every worker, or the checkpoint's state; then rank 0 opens the writers."""
        self.state, args = state, self.args
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # the sub-env processes are running
        for tensor in state.agent.parameters() if dist.is_initialized() else []:
            dist.broadcast(tensor.data, src=0)
        if self.checkpoint:
            load_state(state, {**self.checkpoint, "rng": self.checkpoint["rng"][self.rank]}, "--resume", args.resume)
        self.start_step, self.start_time = state.global_step, time.time()
        if self.rank == 0:
            if self.checkpoint:  # a resumed run takes its directory once its state fits, and keeps a better best.pt
                _, self.lock = claim_run_dir(args, self.checkpoint)
                with suppress(OSError, ValueError, KeyError, TypeError), open(f"runs/{self.name}/best.eval.json") as f:
                    self.best = float(json.load(f)["mean"])
            saved = self.checkpoint or {"wandb_id": None, "global_step": -1}  # a resumed run drops what came after
            if args.track:  # before the writer: W&B follows the TensorBoard files written after it starts
                import wandb

                run = {"project": args.wandb_project_name, "entity": args.wandb_entity, "config": vars(args)}
                run |= {"name": self.name, "id": saved["wandb_id"], "resume": "allow"}
                self.wandb_run = wandb.init(**run, sync_tensorboard=True, save_code=True)
            self.writer = SummaryWriter(f"runs/{self.name}", purge_step=saved["global_step"] + 1)
            table = "\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
            workers = f" x {self.world_size} workers" if self.world_size > 1 else ""
            print(f"{self.name}: {self.num_iterations} iterations of {args.num_envs * args.num_steps} steps{workers}")

    def log(self, state: TrainState, logs: dict, episodes: list) -> bool:
        """After an iteration: TensorBoard (all workers' episodes), the console, checkpoints; -> whether to stop."""
        reports = self.gather((episodes, self.stop_signal))
        self.stopping = next((signum for _, signum in reports if signum), None)  # a signal to any worker stops all
        self.sps = int((state.global_step - self.start_step) / (time.time() - self.start_time))
        if self.rank == 0:
            for step, episode_return, length in [episode for episodes, _ in reports for episode in episodes]:
                self.writer.add_scalar("charts/episodic_return", episode_return, step)
                self.writer.add_scalar("charts/episodic_length", length, step)
                self.returns.append(episode_return)
                self.episodes += 1
            for tag, value in {**logs, "charts/SPS": self.sps}.items():
                self.writer.add_scalar(tag, value, state.global_step)
            done, last = state.iteration / self.num_iterations, self.returns[-100:]
            if state.iteration % max(1, self.num_iterations // 20) == 0 or done == 1:
                left = int((self.args.total_timesteps - state.global_step) / max(self.sps, 1))  # seconds
                returns = f"{np.mean(last):.1f}" if last else "n/a"
                total = state.global_step // state.iteration * self.num_iterations
                status = f"step {state.global_step}/{total} ({done:.0%}) | SPS {self.sps} | return {returns}"
                print(f"{status} (last {len(last)} episodes) | ETA {left // 3600}h{left // 60 % 60:02d}m", flush=True)
        evaluate_now = self.args.eval_every and state.iteration % self.args.eval_every == 0 and not self.stopping
        checkpoint_now = self.args.checkpoint_every and state.iteration % self.args.checkpoint_every == 0
        if self.stopping or evaluate_now or checkpoint_now:
            self.save(f"runs/{self.name}/checkpoints/iteration_{state.iteration:07d}.pt")
        if evaluate_now and self.rank == 0 and (result := self.evaluate(state.global_step))["mean"] > self.best:
            self.best, best = result["mean"], f"runs/{self.name}/best"  # the best model so far, and its evaluation
            shutil.copyfile(self.last_checkpoint, f"{best}.pt.tmp")
            os.replace(f"{best}.pt.tmp", f"{best}.pt")
            write_json(f"{best}.eval.json", result | {"checkpoint": f"{best}.pt", "global_step": state.global_step})
        return self.stopping is not None

    def save(self, path: str) -> None:
        """A checkpoint of the whole state and every worker's RNGs, never non-finite; rank 0 writes it (and rotates)."""
        checkpoint = {"format": CHECKPOINT_FORMAT, "args": vars(self.args), "run_name": self.name}
        checkpoint |= {"wandb_id": self.wandb_run and self.wandb_run.id, **self.state.state_dict()}
        checkpoint |= {"episodes": self.episodes, "returns": torch.tensor(self.returns[-100:], dtype=torch.float64)}
        checkpoint |= {"wall_seconds": time.time() - self.created, "rng": self.gather(checkpoint["rng"])}
        if (bad := first_non_finite(checkpoint)) is not None:
            raise FloatingPointError(f"{bad} is not finite")
        if self.rank == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:  # a crash mid-write leaves the file at `path` as it was, a failed write no temporary file
                torch.save(checkpoint, f"{path}.tmp")
                os.replace(f"{path}.tmp", path)
            except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError
                os.path.exists(f"{path}.tmp") and os.remove(f"{path}.tmp")
                reason = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise OSError(getattr(e, "errno", None), reason, path) from None  # reported in one line on leaving
            written = sorted(glob.glob(f"runs/{self.name}/checkpoints/*.pt"), key=os.path.getmtime)  # newest last
            for stale in written[: -self.args.keep_checkpoints] + glob.glob(f"runs/{self.name}/checkpoints/*.tmp"):
                os.remove(stale)
        self.last_checkpoint = path

    def finish(self, state: TrainState) -> None:
        """After the loop: how to continue a run a signal stopped, or the --save-model checkpoint and its evaluation."""
        if self.stopping and self.rank == 0:
            launcher = "python" if self.world_size == 1 else "torchrun <the same launch flags>"
            command = f"{launcher} {shlex.join([sys.argv[0], '--resume', self.last_checkpoint])}"
            print(f"stopped at step {state.global_step}; continue with: {command}", file=sys.stderr)
        if self.stopping or not self.args.save_model:
            return
        self.save(f"runs/{self.name}/{self.args.exp_name}.pt")
        if self.rank == 0:
            print(f"model saved to {self.last_checkpoint}")
            returns = self.evaluate(state.global_step, self.video_folder and f"{self.video_folder}/eval")["returns"]
            for episode, episode_return in enumerate(returns):
                self.writer.add_scalar("eval/episodic_return", episode_return, episode)

    def evaluate(self, step: int, video_folder: Optional[str] = None) -> dict:
        """Rank 0: the last checkpoint's evaluation on fresh envs, logged at `step` (a signal stops it at once)."""
        self.evaluating, seed, path = True, self.args.seed + 10_000, self.last_checkpoint
        if self.stop_signal:  # no iteration is left to finish: a signal stops the evaluation at once
            raise SignalStop(self.stop_signal)
        returns = evaluate(path, self.args.eval_episodes, seed, self.device, video_folder)
        self.evaluating, self.evaluation, std = False, float(np.mean(returns)), float(np.std(returns))
        for tag, value in {"eval/mean_return": self.evaluation, "eval/std_return": std}.items():
            self.writer.add_scalar(tag, value, step)
        print(f"evaluation of {path} (step {step}): {self.evaluation:.2f} +- {std:.2f} over {len(returns)} episodes")
        return {"checkpoint": path, "seed": seed, "mean": self.evaluation, "std": std, "returns": returns}

    def __exit__(self, kind, error, traceback) -> None:
        """summary.json (how the run ended, its totals and flags); all put back; a failed write or a NaN: one line."""
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        torch.set_num_threads(self.threads)
        threading.excepthook = self.excepthook  # writer thread's OSErrors (a full disk): the close below reports one
        try:  # a full disk fails the writer's last flush too
            self.writer is None or self.writer.close()
        except OSError as e:
            kind, error = (kind, error) if kind else (OSError, e)
        self.stopping = error.args[0] if kind is SignalStop else self.stopping
        cause = kind and (" ".join(str(error).split())[:200] or kind.__name__)
        end = {None: "finished", FloatingPointError: "non-finite"}.get(kind, "error")
        end = f"signal {signal.Signals(self.stopping).name}" if self.stopping and kind in (None, SignalStop) else end
        script, last_good = os.path.basename(__file__), f"last good checkpoint: {self.last_checkpoint or 'none'}"
        if self.lock:  # rank 0, on a run it took: summary.json, atomically, valid JSON (NaN, inf: null), totals, flags
            args, step = self.args, getattr(self.state, "global_step", (self.checkpoint or {}).get("global_step", 0))
            summary = {"run": self.name, "script": script, "env_id": args.env_id, "seed": args.seed, "ended": end}
            summary |= {"error": cause if end == "error" else None, "global_step": step, "episodes": self.episodes}
            summary |= {"total_timesteps": args.total_timesteps, "sps": self.sps, "eval_mean_return": self.evaluation}
            summary |= {"wall_seconds": round(time.time() - self.created, 3), "last_checkpoint": self.last_checkpoint}
            summary |= {"mean_return_last_100": np.mean(self.returns[-100:] or [np.nan]), "args": vars(args)}
            try:
                write_json(f"runs/{self.name}/summary.json", summary)
            except OSError as e:  # the run's own error (a full disk, say) is the one to report
                print(f"warning: cannot write {e.filename}: {e.strerror or e}", file=sys.stderr)
        if self.wandb_run is not None:  # the videos, then the end of the W&B run
            import wandb

            for path in sorted(glob.glob(f"{self.video_folder}/**/*.mp4", recursive=True) if self.video_folder else []):
                self.wandb_run.log({"videos/eval" if "/eval/" in path else "videos/train": wandb.Video(path)})
            self.wandb_run.finish()
        if dist.is_initialized() and kind is None:  # leave together: no one tears the group down while in use
            dist.barrier()
            dist.destroy_process_group()
        if isinstance(error, (FloatingPointError, OSError)):  # a non-finite number; a full disk, a read-only directory
            what = f"iteration {self.state.iteration}: {error}; stopped without saving"
            if isinstance(error, OSError):
                what = f"cannot write {error.filename or f'runs/{self.name}'}: {error.strerror or error}"
            raise SystemExit(f"{script}: stopped: {what} ({last_good})" if self.rank == 0 else 1) from None
        if dist.is_initialized() and (issubclass(kind, dist.DistError) or "gloo" in cause):  # another worker died
            raise SystemExit(f"{script}: worker {self.rank} stopped: another worker is gone ({cause[:100]})") from None
        if self.stopping and kind is None:
            raise SystemExit(128 + self.stopping)


def check_args(args, world_size: int, counts: list[str], positive: list[str], non_negative: list[str]) -> None:
    """The checks all scripts share: numbers in range and finite, batch splits, a W&B login for --track."""
    rules = [(counts, "a positive integer"), (positive, "a positive number"), (non_negative, "zero or positive")]
    for names, must in rules:
        for name, value in [(name, getattr(args, name)) for name in names if getattr(args, name) is not None]:
            in_range = value >= 0 if names is non_negative else value > 0
            if not (in_range and np.isfinite(value)):
                raise UsageError(f"--{name.replace('_', '-')} must be {'finite' if in_range else must}, got {value}")
    batch, minibatches, envs = args.num_envs * args.num_steps, args.num_minibatches, args.num_envs
    if batch % minibatches:
        problem = f"--num-minibatches {minibatches} does not divide the batch of {batch} (--num-envs x --num-steps)"
        raise UsageError(f"{problem}; use one of {[d for d in range(1, min(batch, 64) + 1) if batch % d == 0]}")
    if getattr(args, "recurrent", False) and envs % minibatches:  # a minibatch is whole env sequences
        problem = f"--recurrent: --num-minibatches {minibatches} does not divide --num-envs {envs}"
        raise UsageError(f"{problem}; use one of {[d for d in range(1, envs + 1) if envs % d == 0]}")
    if args.norm_adv and batch // minibatches < 2:
        raise UsageError("--norm-adv: one sample has no standard deviation; use fewer minibatches or --no-norm-adv")
    if args.total_timesteps < batch * world_size:
        problem = f"--total-timesteps {args.total_timesteps} is smaller than one batch of {batch * world_size}"
        raise UsageError(f"{problem} (--num-envs x --num-steps x workers); use at least {batch * world_size}")
    if not 0 <= args.seed <= 2**32 - world_size:  # numpy seeds each worker with seed + rank
        raise UsageError(f"--seed must be in [0, {2**32 - world_size}] (numpy's seed range), got {args.seed}")
    for name in [name for name in ("gamma", "gae_lambda") if not 0 <= getattr(args, name) <= 1]:
        raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    if args.track and os.environ.get("WANDB_MODE") not in ("offline", "disabled", "dryrun"):
        import wandb

        try:  # no key: False; a key and no network: W&B's error, after its timeout
            problem = not wandb.login(prompt=False) and "not logged in to Weights & Biases"
        except wandb.errors.Error as e:
            problem = " ".join(str(e).split()).rstrip(".")[:150]
        if problem:
            raise UsageError(f"--track: {problem}; run `wandb login`, or log locally with WANDB_MODE=offline")


def claim_run_dir(args, checkpoint: Optional[dict]) -> tuple:
    """runs/<run> (a new run: <name>_2, _3, ... if taken), locked while this process lives -> its name, the lock."""
    name = f"{args.env_id.replace(':', '_').replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if "/" in args.exp_name:  # nothing outside runs/ (a checkpoint's run name is checked when it loads)
        raise UsageError(f"--exp-name {args.exp_name!r} must be one folder name, without '/'")
    for run_name in [checkpoint["run_name"]] if checkpoint else [name, *(f"{name}_{k}" for k in range(2, 10_000))]:
        try:
            os.makedirs(f"runs/{run_name}", exist_ok=checkpoint is not None)
            lock = open(f"runs/{run_name}/.lock", "w")
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            write_json(f"runs/{run_name}/summary.json", {"run": run_name, "ended": "running"})  # until it ends
            return run_name, lock
        except FileExistsError:
            continue
        except BlockingIOError:
            raise UsageError(f"runs/{run_name} is in use by another process; wait for it to end") from None
    raise UsageError(f"runs/{name}: 10000 runs of this name exist already; use another --exp-name")


def first_non_finite(state, where: str = "") -> Optional[str]:
    """Where the first NaN or infinite float is in a nested checkpoint (dicts, lists, tensors, numbers), or None."""
    if isinstance(state, (torch.Tensor, float)):  # (integers are always finite)
        return None if torch.isfinite(torch.as_tensor(state)).all() else where
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, (list, tuple)) else []
    return next(filter(None, (first_non_finite(value, f"{where}/{key}".lstrip("/")) for key, value in items)), None)


def load_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint this script wrote, loaded with weights_only=True (a pickle cannot run code), or one line why not."""
    try:
        with warnings.catch_warnings(action="ignore"):  # torch's notes on pickle protocols: the error below says all
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # no such file, code in the pickle, a truncated file, not a torch file at all
        reason = "it pickles objects other than tensors" if type(e).__name__ == "UnpicklingError" else str(e)
        raise UsageError(f"{flag} {path} is not a readable checkpoint ({' '.join(reason.split())[:120]})") from None
    found = checkpoint.get("format", "no format field") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    kinds = {"args": dict, "run_name": str, "rng": list, "global_step": int, "model": dict, "optimizer": dict}
    odd = [found] if found != CHECKPOINT_FORMAT else [f"missing {k}" for k in {*kinds, "wandb_id"} - checkpoint.keys()]
    kinds |= {"iteration": int, "episodes": int, "returns": torch.Tensor, "wall_seconds": float}  # (older: no totals)
    odd += [f"type of {k}" for k in kinds if not odd and not isinstance(checkpoint.get(k, kinds[k]()), kinds[k])]
    odd += [f"{key} < 0" for key in ("global_step", "iteration", "episodes") if not odd and checkpoint.get(key, 0) < 0]
    odd += [] if odd or checkpoint["run_name"].strip(".") and "/" not in checkpoint["run_name"] else ["run_name"]
    odd += [] if odd else [f"flag {key}" for key in checkpoint["args"].keys() - vars(Args()).keys()]
    with warnings.catch_warnings(record=True) as caught:  # tyro warns of a saved flag's value not of the flag's type
        odd or tyro.cli(Args, default=Args(**{**vars(Args()), **checkpoint["args"]}), args=[])
    odd += [str(w.message).split(". ")[0] for w in caught if "is annotated with type" in str(w.message)]
    odd += [] if odd else [f"{where} not finite" for where in [first_non_finite(checkpoint)] if where]
    if odd:
        raise UsageError(f"{flag} {path} is not a whole checkpoint of {os.path.basename(__file__)} ({', '.join(odd)})")
    return checkpoint


def load_state(target, state: dict, flag: str, path: str) -> None:
    """target.load_state_dict(state) (a network, or the whole training state), or one line naming the checkpoint."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise UsageError(f"{flag} {path} does not fit the network of its own flags ({reason})") from None


def parse_args() -> Args:
    """The command line; with --resume PATH the checkpoint's flags are the defaults (only run control may change)."""
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):  # `python ppo_x.py CartPole-v1`
        raise UsageError(f"{sys.argv[1]}: the script takes flags only; for an env id, --env-id {sys.argv[1]}")
    groups = make_dataclass("Flags", [("algorithm", AlgorithmArgs), ("run_control", RunControlArgs)])  # --help's two
    flags = tyro.cli(groups, description=__doc__, config=(tyro.conf.OmitArgPrefixes,))  # --help: usage, detail map
    args = Args(**vars(flags.algorithm), **vars(flags.run_control))
    if args.resume is not None:  # the checkpoint's flags are the defaults (a flag added since then: its default)
        saved = {**vars(Args()), **load_checkpoint(args.resume, "--resume")["args"]}
        args = tyro.cli(Args, default=Args(**{**saved, "resume": args.resume, "eval_checkpoint": None}))
        for name in [name for name, value in vars(args).items() if name not in RUN_CONTROL and saved[name] != value]:
            flag, given = "--" + name.replace("_", "-"), getattr(args, name)
            problem = f"--resume: the checkpoint was trained with {flag} {saved[name]}, this command has {flag} {given}"
            raise UsageError(f"{problem}; drop {flag} (--resume alone continues with the run's flags)")
    return args


def evaluate_checkpoint(args) -> None:
    """--eval-checkpoint: evaluate a saved policy, print the result and write it as JSON (a signal stops it at once)."""
    validate_args(args, 1)
    checkpoint = load_checkpoint(args.eval_checkpoint, "--eval-checkpoint")
    check_env(Args(**{**checkpoint["args"], "capture_video": args.capture_video}))
    video_folder = f"videos/{checkpoint['run_name']}/eval" if args.capture_video else None
    print(f"evaluating {args.eval_checkpoint} over {args.eval_episodes} episodes", flush=True)
    seed, path = checkpoint["args"]["seed"] + 10_000, args.eval_checkpoint
    returns = evaluate(path, args.eval_episodes, seed, video_folder=video_folder)
    result = {"checkpoint": path, "seed": seed, "mean": np.mean(returns), "std": np.std(returns), "returns": returns}
    print(f"evaluation of {path}: {result['mean']:.2f} +- {result['std']:.2f} over {len(returns)} episodes")
    write_json(args.eval_json or f"{path.removesuffix('.pt')}.eval.json", result)  # for scripts and CI


def write_json(path: str, obj: dict) -> None:
    """obj as valid JSON (NaN, inf: null), in place of the file at once (never half written)."""
    with open(f"{path}.tmp", "w") as f:
        json.dump(json.loads(json.dumps(obj), parse_constant=lambda _: None), f, indent=2)
    os.replace(f"{path}.tmp", path)


CHECKPOINT_FORMAT = "ppo37 ppo_atari.py checkpoint v2"  # from here on: this script's own checks and evaluation


def validate_args(args: Args, world_size: int) -> None:
    """Reject settings that cannot work, naming the flag and what would."""
    counts = ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "frame_skip"]
    positive = ["learning_rate", "adam_eps", "clip_coef", "max_grad_norm", "kl_target", "target_kl"]
    non_negative = ["ent_coef", "vf_coef", "kl_coef", "noop_max", "clip_reward", "checkpoint_every", "torch_threads"]
    counts += ["frame_stack", "lstm_hidden_size", "keep_checkpoints", "eval_episodes"]
    check_args(args, world_size, counts, positive, [*non_negative, "eval_every"])
    if args.frame_size < 36:
        raise UsageError(f"--frame-size {args.frame_size} is too small for the Nature CNN; use 36 or more (paper: 84)")
    if args.compile and args.recurrent:
        raise UsageError("--compile does not take --recurrent (its loop unrolls into a huge graph); drop --compile")


def check_env(args: Args) -> tuple[int, str]:
    """An ALE game, or gray or RGB images and Discrete actions; -> bytes of rollout and network (x4), their flags."""
    try:
        with closing(make_gym_env(args)) as env:
            space, actions, ale = env.observation_space, env.action_space, hasattr(env.unwrapped, "ale")
    except (gym.error.Error, ImportError, AttributeError, TypeError) as e:  # (a crafted checkpoint's id)
        how = "list ids with gymnasium.pprint_registry(); a module:EnvId's module must be here or on PYTHONPATH"
        raise UsageError(f"--env-id {args.env_id}: {(str(e).strip().splitlines() or [repr(e)])[0]} ({how})") from None
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) >= 2):  # features
        fits = "ppo_continuous.py" if isinstance(actions, gym.spaces.Box) else "ppo_discrete.py"
        raise UsageError(f"--env-id {args.env_id} has no image observations (uint8 H x W [x 3]); use {fits}")
    if space.shape[2:] not in ((), (3,)) or not isinstance(actions, gym.spaces.Discrete):
        raise UsageError(f"--env-id {args.env_id}: {space.shape} images, {actions} actions; none of our scripts fits")
    if args.env_backend == "ale" and (not ale or args.env_kwargs or args.capture_video):
        problem = "takes ALE games, and neither --env-kwargs nor --capture-video (it does not render)"
        raise UsageError(f"--env-backend ale {problem}; drop them, or train with --env-backend gymnasium")
    if args.capture_video and "rgb_array" not in env.metadata.get("render_modes", []):
        raise UsageError(f"--capture-video: {args.env_id} renders no rgb_array frames to record; drop the flag")
    network_bytes = 4 * 4 * 64 * max(((args.frame_size - 8) // 4 + 1 - 4) // 2 + 1 - 2, 1) ** 2 * 512  # 1st linear
    step_bytes = args.frame_stack * args.frame_size**2 + 8 + 36
    flags = f"--num-envs {args.num_envs} x --num-steps {args.num_steps} x --frame-stack {args.frame_stack} x "
    return args.num_envs * args.num_steps * step_bytes + network_bytes, f"{flags}--frame-size {args.frame_size}^2"


@torch.no_grad()
def evaluate(path: str, episodes: int, seed: int = 1, device=torch.device("cpu"), video_folder=None) -> list[float]:
    """Raw scores of whole games of a checkpoint's argmax policy on a fresh env of its back end and Atari settings."""
    checkpoint = load_checkpoint(path, "--eval-checkpoint")
    saved = Args(**{**checkpoint["args"], "num_envs": 1, "vector_mode": "sync"})
    envs = make_envs(saved, video_folder)
    with torch.random.fork_rng(devices=[]):  # a new network draws its weights: the caller's RNG is left as it was
        agent = Agent(saved, int(envs.single_action_space.n)).to(device)
    load_state(agent, checkpoint["model"], "--eval-checkpoint", path)
    (obs, info), start, state = envs.reset(seed=seed), torch.ones(1, device=device), agent.initial_state(1, device)
    game_scores, returns = GameScores(info.get("lives", np.zeros(1))), []
    while len(returns) < episodes:
        action, _, _, _, state = agent.get_action_and_value(torch.tensor(obs, device=device), None, state, start, True)
        obs, reward, terminated, truncated, info = envs.step(action.cpu().numpy())
        start = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)  # a lost life too
        returns += [score for score, _ in game_scores.update(reward, terminated, truncated, info)]
    envs.close()
    return returns[:episodes]


if __name__ == "__main__":
    script = os.path.basename(__file__)
    sys.path.insert(1, os.getcwd())  # module:EnvId imports module from the working directory too, as `python -m` would
    signal.signal(signal.SIGINT, stop_at_once)  # outside a run (--eval-checkpoint, start-up): stop at once
    signal.signal(signal.SIGTERM, stop_at_once)
    try:
        main(parse_args())
    except UsageError as e:  # under torchrun every worker finds the same error: rank 0 reports it
        os.environ.get("RANK", "0") == "0" and print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(2)  # a single process then ends without exit hooks (W&B's can wait minutes for its server)
    except SignalStop as stop:  # a second signal, or one outside the training loop
        print(f"{script}: {signal.Signals(stop.args[0]).name}: stopped", file=sys.stderr)
        sys.exit(128 + stop.args[0])
    except OSError as e:  # the file system outside a run (a run reports its own): a read-only working directory
        sys.exit(f"{script}: error: {e.filename or 'a file'}: {e.strerror or e}")
    finally:  # torchrun: a worker ends here, without the C++ teardown that can abort it ("terminate called ..."),
        code = getattr(end := sys.exc_info()[1], "code", 0) or 0  # but not after bad input (2): rank 0 may be printing
        if isinstance(end, (SystemExit, type(None))) and (code == 2) != bool(os.environ.get("LOCAL_RANK")):
            sys.stdout.flush()
            sys.stderr.write(f"{code}\n" if isinstance(code, str) else "")  # SystemExit's code: a number, or a line
            os._exit(1 if isinstance(code, str) else code)
