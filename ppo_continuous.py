"""PPO for Box (continuous) action spaces with a Gaussian policy, in one file.

    python ppo_continuous.py --env-id HalfCheetah-v5
    python ppo_continuous.py --help          # every flag, one line each
    torchrun --standalone --nproc_per_node 2 ppo_continuous.py --env-id HalfCheetah-v5   # 2 data-parallel workers

Defaults reproduce CleanRL's ppo_continuous_action.py (itself openai/baselines' ppo2 for MuJoCo); "ours"
marks the defaults that do not. Observation and reward normalisation live in this file, at the vector level
(one set of statistics for all sub-envs, like SB3's VecNormalize), and are saved with the model, so an
evaluated model sees exactly the inputs it was trained on. Read it top to bottom: Arguments, Environment,
Agent, PPO math, Training, `main`; the run control after `main` is not PPO and can wait for a second read.

DETAIL MAP: "The 37 Implementation Details of PPO" (Huang et al., 2022), detail -> flag -> where
   1  vectorized environments          --num-envs --num-steps --vector-mode   make_envs, collect_rollout
   2  orthogonal init, constant bias   --ortho-init                           layer_init
   3  Adam epsilon                     --adam-eps                             main
   4  learning-rate annealing          --anneal-lr --learning-rate            train
   5  GAE                              --gae --gamma --gae-lambda             compute_advantages
   6  shuffled minibatches, K epochs   --num-minibatches --update-epochs      update
   7  advantage normalisation          --norm-adv                             ppo_loss
   8  clipped surrogate objective      --clip-coef                            clipped_policy_loss
   9  value-function loss clipping     --clip-vloss                           value_loss
  10  overall loss, entropy bonus      --ent-coef --vf-coef                   ppo_loss
  11  global gradient clipping         --max-grad-norm                        update
  12  debug variables                  (logged: approx_kl, clipfrac, ...)     update, train
  13  separate or shared networks      --shared-network                       Agent
  23  Normal distribution              (the policy)                           Agent.get_action_and_value
  24  state-independent log std        --state-dependent-std                  Agent
  25  independent action components    (the policy)                           gaussian_logprob_and_entropy
  26  separate MLPs, policy and value  --shared-network                       Agent
  27  clip actions, store unclipped    --clip-action                          env_actions, collect_rollout
  28  observation normalisation        --norm-obs --norm-obs-final            RunningMeanStd, Normalization
  29  observation clipping             --clip-obs                             normalize_obs
  30  reward scaling                   --norm-reward --norm-reward-restart    RewardScaler
  31  reward clipping                  --clip-reward                          RewardScaler
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
import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

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
    env_id: str = "HalfCheetah-v5"
    """gymnasium id; `module:EnvId` imports `module` (from the working directory too) to register your own env"""
    env_kwargs: tuple[str, ...] = ()
    """KEY=VALUE arguments of gym.make, each VALUE a Python literal or else a string (e.g. max_episode_steps=200)"""
    num_envs: int = 1
    """detail 1: parallel environments (N), per worker under torchrun"""
    num_steps: int = 2048
    """detail 1: steps per env per rollout (M); the batch is N x M (x workers under torchrun)"""
    bootstrap_truncation: bool = True
    """on a time-limit truncation, bootstrap with V(final obs) (ours; off reproduces CleanRL)"""
    # Continuous-action details
    clip_action: bool = True
    """detail 27: clip actions to the bounds when stepping the env; the unclipped sample is trained on"""
    norm_obs: bool = True
    """detail 28: normalise observations by a running mean and variance (of Box features; one-hot ones stay: ours)"""
    norm_obs_final: bool = False
    """detail 28: also count ended episodes' final observations in the statistics (on: CleanRL; off: ours)"""
    clip_obs: float = 10.0
    """detail 29: clip normalised observations to [-clip, clip]; 0 disables"""
    norm_reward: bool = True
    """detail 30: divide rewards by the running std of a discounted return"""
    norm_reward_restart: Literal["episode-end", "termination"] = "episode-end"
    """detail 30: the return restarts after every episode end (ours, as baselines), or at terminations only (CleanRL)"""
    clip_reward: float = 10.0
    """detail 31: clip scaled rewards to [-clip, clip]; 0 disables"""
    state_dependent_std: bool = False
    """detail 24: off: a state-independent log-std parameter initialised to 0; on: a network head"""
    # Network
    ortho_init: bool = True
    """detail 2: orthogonal weights (gain sqrt 2, policy head 0.01, value head 1), zero biases"""
    shared_network: bool = False
    """detail 13/26: one 64-64 tanh trunk for policy and value instead of two"""
    # Optimisation
    learning_rate: float = 3e-4
    """detail 4: Adam learning rate (the start value when annealed)"""
    anneal_lr: bool = True
    """detail 4: anneal the learning rate linearly to 0"""
    adam_eps: float = 1e-5
    """detail 3: Adam epsilon"""
    gae: bool = True
    """detail 5: GAE advantages; off: discounted returns bootstrapped at the segment end"""
    gamma: float = 0.99
    """detail 5: discount factor (also of the return used for reward scaling)"""
    gae_lambda: float = 0.95
    """detail 5: GAE lambda"""
    num_minibatches: int = 32
    """detail 6: minibatches per epoch (must divide N x M)"""
    update_epochs: int = 10
    """detail 6: passes over the batch per update (K)"""
    norm_adv: bool = True
    """detail 7: normalise advantages per minibatch"""
    clip_coef: float = 0.2
    """detail 8: surrogate clipping coefficient epsilon (also the value clip range)"""
    anneal_clip: bool = False
    """auxiliary: anneal the clipping coefficient linearly to 0, like the learning rate"""
    clip_vloss: bool = True
    """detail 9: clip the value loss around the rollout's values"""
    ent_coef: float = 0.0
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
    total_timesteps: int = 1000000
    """environment steps of the whole run, summed over all envs (and all workers under torchrun)"""
    vector_mode: Literal["sync", "async"] = "sync"
    """detail 1: step the envs in this process (sync) or in one subprocess each (async)"""
    cuda: bool = True
    """use CUDA when it is available"""
    torch_threads: int = 1
    """torch's CPU threads (1 suits these small networks: more threads only add synchronisation; 0: torch's default)"""
    compile: bool = False
    """torch.compile the agent's get_action_and_value (CPU: ~10 s of compiling first; see docs/speed.md)"""
    track: bool = False
    """also log to Weights & Biases (WANDB_MODE=offline logs without a network)"""
    wandb_project_name: str = "ppo37"
    """Weights & Biases project"""
    wandb_entity: Optional[str] = None
    """Weights & Biases entity (team); None uses your default"""
    # Checkpoints, evaluation, video
    save_model: bool = False
    """write a checkpoint (and the normalisation statistics) to runs/<run_name>/<exp_name>.pt at the end; evaluate it"""
    checkpoint_every: int = 0
    """also write a checkpoint every this many iterations to runs/<run_name>/checkpoints/ (0: never)"""
    keep_checkpoints: int = 3
    """how many of the latest checkpoints to keep in runs/<run_name>/checkpoints/"""
    resume: Optional[str] = None
    """continue the run of this checkpoint, with the flags it saved (flags given must match, except run control)"""
    eval_every: int = 0
    """evaluate every this many iterations (0: never), log eval/*, keep the best model as runs/<run_name>/best.pt"""
    eval_episodes: int = 10
    """mean-action episodes (statistics frozen) per evaluation (--save-model, --eval-every, --eval-checkpoint)"""
    eval_checkpoint: Optional[str] = None
    """only evaluate this checkpoint (no training), print its mean return and write the returns as JSON (--eval-json)"""
    eval_json: Optional[str] = None
    """where --eval-checkpoint writes returns, mean, std, checkpoint and seed (None: next to it, <name>.eval.json)"""
    capture_video: bool = False
    """record episodes of the first env to videos/<run_name>/ (training; evaluation in videos/<run_name>/eval)"""


@dataclass
class Args(RunControlArgs, AlgorithmArgs):
    pass


RUN_CONTROL = set(RunControlArgs.__dataclass_fields__)  # may change on --resume; the other flags must match


# ==== Environment ====


class UsageError(Exception):
    """Bad input from the user: reported as one line on stderr with exit code 2."""


def make_gym_env(args: Args, **kwargs) -> gym.Env:
    """gym.make of --env-id with --env-kwargs; MuJoCo renders without a display through EGL when a video is recorded."""
    for key, _, value in (pair.partition("=") for pair in args.env_kwargs):
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # a word: the string itself (render_mode=human)
            kwargs[key] = value
    if kwargs.get("render_mode") == "rgb_array":
        os.environ.setdefault("MUJOCO_GL", "egl")
    return gym.make(args.env_id, **kwargs)


def make_env(args: Args, video_folder: Optional[str] = None, signalled=None):
    def thunk():
        if video_folder is None:
            env = make_gym_env(args)
        else:  # episodes 0, 1, 8, 27, ... (gymnasium's cubic schedule) as mp4 files, none begun after a signal
            env = make_gym_env(args, render_mode="rgb_array")
            env = gym.wrappers.RecordVideo(env, video_folder, disable_logger=True)
            cubic = env.episode_trigger  # `signalled`: set by run control at SIGINT / SIGTERM, seen across processes
            env.episode_trigger = lambda episode: cubic(episode) and not (signalled and signalled.is_set())
        if not isinstance(env.observation_space, gym.spaces.Box):  # Discrete -> one-hot, Dict / Tuple -> concatenated
            env = gym.wrappers.FlattenObservation(env)
        return env

    return thunk


def make_envs(args: Args, video_folder: Optional[str] = None, signalled=None) -> gym.vector.VectorEnv:
    """detail 1: N envs stepped together; gymnasium 1.x same-step autoreset puts the final observation
    of an ended episode in info["final_obs"] and the next episode's first obs in obs."""
    vector_env = gym.vector.SyncVectorEnv if args.vector_mode == "sync" else gym.vector.AsyncVectorEnv
    thunks = [make_env(args, video_folder if i == 0 else None, signalled) for i in range(args.num_envs)]
    envs = vector_env(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)  # exact returns and lengths, across autoresets too


class RunningMeanStd:
    """Running mean and variance of a stream of batches, merged with Chan et al.'s parallel formula."""

    def __init__(self, shape: tuple = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = epsilon  # a tiny prior count, as in baselines, so the first batch sets the statistics

    def update(self, batch: np.ndarray) -> None:
        """batch [B, *shape]"""
        self.update_from_moments(batch.mean(0), batch.var(0), batch.shape[0])

    def update_from_moments(self, batch_mean, batch_var, batch_count) -> None:
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        mean, var = torch.from_numpy(np.asarray(self.mean)), torch.from_numpy(np.asarray(self.var))
        return {"mean": mean, "var": var, "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].numpy(), state["var"].numpy(), state["count"]


def box_features(space: gym.Space) -> np.ndarray:
    """[flat dim] True where a flattened observation of `space` holds a Box part: --norm-obs normalises only those
    (ours, as SB3 normalises only Box parts); a Discrete's one-hot and a MultiBinary's bits stay 0 or 1."""
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):  # flattened part after part, in the space's order
        parts = space.values() if isinstance(space, gym.spaces.Dict) else space
        return np.concatenate([box_features(part) for part in parts])
    return np.full(gym.spaces.flatdim(space), isinstance(space, gym.spaces.Box))


def normalize_obs(obs: np.ndarray, obs_rms: Optional[RunningMeanStd], clip_obs: float) -> np.ndarray:
    """detail 28-29: (obs - mean) / std, clipped to [-clip_obs, clip_obs]; identity without statistics."""
    if obs_rms is None:
        return obs
    normalized = (obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8)
    return np.clip(normalized, -clip_obs, clip_obs) if clip_obs > 0 else normalized


class RewardScaler:
    """detail 30-31: rewards [N] divided by the running std of each sub-env's discounted return, then clipped. restart
    "episode-end" (ours, baselines' VecNormalize): the return restarts after any episode end; "termination" (CleanRL,
    gymnasium 0.29's NormalizeReward): return * gamma * (1 - terminated) + reward, so it restarts before a terminal
    step's reward (which carries into the next episode) and runs on across time limits."""

    def __init__(self, num_envs: int, gamma: float, clip_reward: float, restart: str = "episode-end"):
        self.return_rms, self.returns = RunningMeanStd(), np.zeros(num_envs)
        self.gamma, self.clip_reward, self.restart = gamma, clip_reward, restart

    def __call__(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
        if self.restart == "termination":
            self.returns = self.returns * self.gamma * (1 - terminated) + rewards
        else:
            self.returns = self.returns * self.gamma + rewards
        self.return_rms.update(all_gather_rows(self.returns))  # every worker's returns under torchrun
        scaled = rewards / np.sqrt(self.return_rms.var + 1e-8)
        if self.restart == "episode-end":
            self.returns[terminated | truncated] = 0.0
        return np.clip(scaled, -self.clip_reward, self.clip_reward) if self.clip_reward > 0 else scaled


# ==== Agent ====


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias_const: float = 0.0, ortho: bool = True) -> nn.Module:
    # detail 2: orthogonal init with a per-layer gain and zero bias (off: PyTorch's default init)
    if ortho:
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, action_dim: int, shared_network=False, state_dependent_std=False, ortho_init=True):
        super().__init__()
        self.shared_network, self.state_dependent_std = shared_network, state_dependent_std

        def trunk():
            return nn.Sequential(
                layer_init(nn.Linear(obs_dim, 64), ortho=ortho_init),
                nn.Tanh(),
                layer_init(nn.Linear(64, 64), ortho=ortho_init),
                nn.Tanh(),
            )

        # detail 13/26: separate actor and critic trunks by default, one shared trunk on request
        self.actor_trunk = trunk()
        self.critic_trunk = self.actor_trunk if shared_network else trunk()
        self.actor_mean = layer_init(nn.Linear(64, action_dim), std=0.01, ortho=ortho_init)
        if state_dependent_std:
            self.actor_logstd = layer_init(nn.Linear(64, action_dim), std=0.01, ortho=ortho_init)
        else:  # detail 24: one log std per action component, independent of the state, starting at 0
            self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))
        self.critic_head = layer_init(nn.Linear(64, 1), std=1.0, ortho=ortho_init)

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic_head(self.critic_trunk(x)).squeeze(-1)

    def get_mean_action(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic policy used for evaluation."""
        return self.actor_mean(self.actor_trunk(x))

    def get_action_and_value(self, x, action=None):
        """x [B, obs_dim] -> action [B, action_dim], logprob [B], entropy [B], value [B]; samples an action when
        `action` is None, else scores the given one."""
        hidden = self.actor_trunk(x)
        value = self.critic_head(hidden if self.shared_network else self.critic_trunk(x)).squeeze(-1)
        mean = self.actor_mean(hidden)
        logstd = self.actor_logstd(hidden) if self.state_dependent_std else self.actor_logstd.expand_as(mean)
        if action is None:
            action = mean + logstd.exp() * torch.randn_like(mean)  # detail 23: Normal(mean, std)
        logprob, entropy = gaussian_logprob_and_entropy(mean, logstd, action)
        return action, logprob, entropy, value


# ==== PPO math: pure functions of tensors (tested in tests/) ====


def gaussian_logprob_and_entropy(mean: torch.Tensor, logstd: torch.Tensor, action: torch.Tensor):
    """mean, logstd, action [B, action_dim] -> logprob [B], entropy [B]; detail 25: the components are independent
    Normals, log-probs and entropies summed."""
    logprob = -0.5 * ((action - mean) * torch.exp(-logstd)) ** 2 - logstd - 0.5 * np.log(2 * np.pi)
    entropy = 0.5 + 0.5 * np.log(2 * np.pi) + logstd
    return logprob.sum(-1), entropy.sum(-1)


def env_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray, clip_action: bool) -> np.ndarray:
    """detail 27: what the env receives; the rollout keeps the unclipped sample for the update."""
    return np.clip(actions, low, high) if clip_action else actions


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


def ppo_loss(agent: Agent, args: Args, mb: dict, clip_coef: float, kl_coef: float):
    """The loss of one minibatch of B samples (`mb`: the batch's entries at its indices, [B, ...]) -> loss,
    pg_loss, v_loss, entropy_loss (scalars) and logratio, ratio [B] of new to old policy."""
    _, newlogprob, entropy, newvalue = agent.get_action_and_value(mb["obs"], mb["actions"])
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


def all_gather_rows(x: np.ndarray) -> np.ndarray:
    """x [B, ...] of every worker, concatenated in rank order ([W * B, ...]); x itself in a single process.
    Normalisation statistics updated with it are those of one process stepping all W x N envs."""
    if not dist.is_initialized():
        return x
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    rows = torch.as_tensor(x, device=device)
    gathered = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, rows)
    return torch.cat(gathered).cpu().numpy()


# ==== Training: CleanRL's phases as functions (rollout, bootstrap and GAE, flatten, K-epoch update), one loop ====


class Rollout:
    """The rollout buffers, [T, N, ...] (entry t: the transition taken at step t), and `next_obs` [N, obs_dim]."""

    def __init__(self, args: Args, obs_dim: int, action_dim: int, device: torch.device):
        shape = (args.num_steps, args.num_envs)
        self.obs = torch.zeros((*shape, obs_dim), device=device)  # normalised, as the policy saw them
        self.actions = torch.zeros((*shape, action_dim), device=device)  # detail 27: the unclipped samples
        self.logprobs = torch.zeros(shape, device=device)
        # what the envs return stays in NumPy until the rollout ends: one conversion per rollout, not per step
        self.rewards = np.zeros(shape, np.float32)  # scaled (detail 30-31)
        self.terminations = np.zeros(shape, np.float32)
        self.truncations = np.zeros(shape, np.float32)
        self.values = torch.zeros(shape, device=device)
        self.final_values = torch.zeros(shape, device=device)  # V(final obs) where step t hit a time limit
        self.next_obs = None


class Normalization:
    """details 28-31: one set of observation and return statistics for all sub-envs and workers; None where off."""

    def __init__(self, args: Args, obs_dim: int):
        self.args, self.obs_rms = args, RunningMeanStd((obs_dim,)) if args.norm_obs else None
        if args.norm_obs:  # the space before flattening says which features are not Box ones: kept at mean 0, var 1
            with make_gym_env(args) as env:
                self.not_box = ~box_features(env.observation_space)
        self.reward_scaler = None
        if args.norm_reward:
            self.reward_scaler = RewardScaler(args.num_envs, args.gamma, args.clip_reward, args.norm_reward_restart)

    def statistics(self) -> dict:  # what a checkpoint saves, by its key
        return {"obs_rms": self.obs_rms, "reward_rms": self.reward_scaler.return_rms if self.reward_scaler else None}

    def observe(self, raw_obs: np.ndarray, update: bool, device: torch.device) -> torch.Tensor:
        """Flatten, update the running statistics (rollout only), normalise, move to the device."""
        raw_obs = raw_obs.reshape(len(raw_obs), -1)
        if self.obs_rms is not None and update:
            self.obs_rms.update(all_gather_rows(raw_obs))  # every worker's observations: the statistics stay equal
            self.obs_rms.mean[self.not_box], self.obs_rms.var[self.not_box] = 0.0, 1.0  # one-hot, bits: as they are
        obs = normalize_obs(raw_obs, self.obs_rms, self.args.clip_obs)
        return torch.as_tensor(obs, dtype=torch.float32, device=device)

    def count_final_obs(self, info: dict, done: np.ndarray) -> None:
        """--norm-obs-final (CleanRL): ended episodes' final observations count in the statistics too."""
        if self.obs_rms is None or not self.args.norm_obs_final:
            return
        final_obs = np.zeros((len(done), self.obs_rms.mean.shape[0]), np.float32)
        final_obs[done] = np.stack(info["final_obs"][done]).reshape(int(done.sum()), -1) if done.any() else 0.0
        final_obs = all_gather_rows(final_obs)[all_gather_rows(done)]  # every worker's
        if len(final_obs):
            self.obs_rms.update(final_obs)


def collect_rollout(envs, agent: Agent, rollout: Rollout, norm: Normalization, args: Args, global_step, world_size):
    """detail 1: num_steps steps of every env with the current policy; fills `rollout` -> the global step (which grows
    by N x workers each step) and the episodes that ended, (global step, raw return, length)."""
    device, episodes = rollout.obs.device, []
    action_space = envs.single_action_space
    low, high = action_space.low.reshape(-1), action_space.high.reshape(-1)
    for step in range(args.num_steps):
        global_step += args.num_envs * world_size
        rollout.obs[step] = rollout.next_obs
        with torch.inference_mode():
            action, logprob, _, value = agent.get_action_and_value(rollout.next_obs)
        # detail 27: the unclipped sample is what the update scores
        rollout.values[step], rollout.actions[step], rollout.logprobs[step] = value, action, logprob

        env_action = env_actions(action.cpu().numpy(), low, high, args.clip_action)
        next_obs, reward, terminated, truncated, info = envs.step(
            env_action.reshape(args.num_envs, *action_space.shape)
        )
        if "episode" in info:  # the episodes that ended: raw return and length (RecordEpisodeStatistics)
            ended = np.flatnonzero(info["_episode"])
            episodes += [(global_step, float(info["episode"]["r"][i]), int(info["episode"]["l"][i])) for i in ended]
        if norm.reward_scaler is not None:
            reward = norm.reward_scaler(reward, terminated, truncated)
        rollout.rewards[step], rollout.terminations[step], rollout.truncations[step] = reward, terminated, truncated
        norm.count_final_obs(info, terminated | truncated)
        rollout.next_obs = norm.observe(next_obs, update=True, device=device)

        # A time limit is not a failure: value the (normalised) final observation to bootstrap from it (ours)
        time_limited = truncated & ~terminated
        if args.bootstrap_truncation and time_limited.any():
            final_obs = norm.observe(np.stack(info["final_obs"][time_limited]), update=False, device=device)
            with torch.inference_mode():
                rollout.final_values[step, time_limited] = agent.get_value(final_obs)
    return global_step, episodes


@torch.no_grad()
def bootstrap_and_gae(agent: Agent, rollout: Rollout, args: Args):
    """detail 5: -> advantages, returns [T, N] of the rollout (tensors on the device), bootstrapped with V(obs after
    its last step)."""
    device = rollout.values.device
    next_value = agent.get_value(rollout.next_obs).cpu().numpy()
    r, values, final_values = rollout, rollout.values.cpu().numpy(), rollout.final_values.cpu().numpy()
    arrays = (r.rewards, values, next_value, r.terminations, r.truncations, final_values)  # ours: V(final obs)
    advantages, returns = compute_advantages(*arrays, args.gamma, args.gae_lambda, args.gae, args.bootstrap_truncation)
    rollout.final_values.zero_()
    return torch.from_numpy(advantages).to(device), torch.from_numpy(returns).to(device)


def flatten(rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
    """[T, N, ...] -> the batch [T * N, ...]: copies, so a batch kept past the next rollout stays as it was."""
    size = rollout.values.numel()
    batch = {"obs": rollout.obs.reshape(size, -1), "actions": rollout.actions.reshape(size, -1)}
    batch |= {"logprobs": rollout.logprobs.reshape(-1), "values": rollout.values.reshape(-1)}
    return {key: x.clone() for key, x in batch.items()} | {
        "advantages": advantages.reshape(-1),
        "returns": returns.reshape(-1),
    }


def update(agent: Agent, optimizer, batch: dict, args: Args, clip_coef: float, kl_coef: float) -> dict:
    """detail 6: K epochs over the batch in shuffled minibatches, one Adam step each; -> statistics of the update
    (detail 12) by log tag. Raises FloatingPointError before a step with a non-finite loss or gradient."""
    parameters = list(agent.parameters())
    order = np.arange(len(batch["values"]))
    clipfracs, minibatch_steps, stop_early = [], 0, False
    for _epoch in range(args.update_epochs):
        np.random.shuffle(order)
        for mb_inds in np.split(order, args.num_minibatches):
            mb_inds = torch.from_numpy(mb_inds)  # one index tensor for every field
            mb = {key: value[mb_inds] for key, value in batch.items()}
            loss, pg_loss, v_loss, entropy_loss, logratio, ratio = ppo_loss(agent, args, mb, clip_coef, kl_coef)

            with torch.no_grad():
                # detail 12: KL estimators from http://joschu.net/blog/kl-approx.html
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
            _, newlogprob, _, _ = agent.get_action_and_value(batch["obs"], batch["actions"])
            logratio = newlogprob - batch["logprobs"]
            stats["losses/kl_after_update"] = all_mean_(((logratio.exp() - 1) - logratio).mean()).item()
    return stats


@dataclass
class TrainState:
    """Everything a run continues from, saved whole in a checkpoint and restored whole on --resume: a change that
    adds state (a scheduler, a statistic) adds it here, to state_dict and load_state_dict."""

    agent: Agent
    optimizer: torch.optim.Optimizer
    norm: Normalization  # details 28-31: the observation and return statistics
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
        statistics = {key: x and x.state_dict() for key, x in self.norm.statistics().items()}  # details 28-31
        return {"model": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(), **steps, **statistics}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for key, statistics in self.norm.statistics().items():
            if statistics is not None:
                statistics.load_state_dict(state[key])
        self.kl_coef, self.global_step, self.iteration = state["kl_coef"], state["global_step"], state["iteration"]
        random.setstate(state["rng"]["python"])
        name, key, *rest = state["rng"]["numpy"]
        np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["cuda"])


def train(args: Args, envs, state: TrainState, device=torch.device("cpu"), rank: int = 0, world_size: int = 1):
    """The PPO loop, from the iteration after `state.iteration` to the last; advances `state` and yields, after each
    iteration, its statistics by log tag (detail 12) and the episodes that ended in it, (global step, return, length).
    It knows nothing of run control: `main` (or your own loop) logs, saves and stops around it."""
    agent, optimizer, norm = state.agent, state.optimizer, state.norm
    num_iterations = args.total_timesteps // (args.num_envs * args.num_steps * world_size)
    rollout = Rollout(args, agent.actor_trunk[0].in_features, agent.actor_mean.out_features, device)
    # env seeds differ per worker, and a resumed run starts new episodes, seeded apart from the first start's
    next_obs, _ = envs.reset(seed=args.seed + (rank + world_size * state.iteration) * args.num_envs)
    # a resumed run keeps its statistics exactly as saved until it trains
    rollout.next_obs = norm.observe(next_obs, update=state.iteration == 0, device=device)
    for iteration in range(state.iteration + 1, num_iterations + 1):
        state.iteration = iteration
        # detail 4 (and the auxiliary clip annealing): linear decay to 0 over the run
        frac = 1.0 - (iteration - 1.0) / num_iterations
        lr_now = frac * args.learning_rate if args.anneal_lr else args.learning_rate
        optimizer.param_groups[0]["lr"] = lr_now
        clip_now = frac * args.clip_coef if args.anneal_clip else args.clip_coef

        rollout_start = time.time()
        state.global_step, episodes = collect_rollout(envs, agent, rollout, norm, args, state.global_step, world_size)
        advantages, returns = bootstrap_and_gae(agent, rollout, args)
        batch = flatten(rollout, advantages, returns)
        update_start = time.time()
        logs = update(agent, optimizer, batch, args, clip_now, state.kl_coef)
        if args.loss == "kl-penalty":
            logs["charts/kl_coef"] = state.kl_coef
            state.kl_coef = adapt_kl_coef(state.kl_coef, logs["losses/kl_after_update"], args.kl_target)

        # Log (detail 12): the update's statistics, where the time went (rollout and GAE, then the update)
        explained = explained_variance(batch["values"].cpu().numpy(), batch["returns"].cpu().numpy())
        logs |= {"losses/explained_variance": explained, "charts/learning_rate": lr_now, "charts/clip_coef": clip_now}
        logs |= {"time/rollout_seconds": update_start - rollout_start}
        logs["time/update_seconds"] = time.time() - update_start
        yield logs, episodes


def main(args: Args) -> TrainState:
    """Train with the run control below (or only evaluate, with --eval-checkpoint); -> the final state."""
    if args.eval_checkpoint is not None:
        return evaluate_checkpoint(args)
    with Run(args) as run, closing(make_envs(args, run.video_folder, run.signalled)) as envs:  # checks, signals
        obs_dim = int(np.prod(envs.single_observation_space.shape))
        action_dim = int(np.prod(envs.single_action_space.shape))
        agent = Agent(obs_dim, action_dim, args.shared_network, args.state_dependent_std, args.ortho_init).to(
            run.device
        )
        if args.compile:  # the rollout and the loss call it: both compiled
            agent.get_action_and_value = torch.compile(agent.get_action_and_value)
        optimizer = torch.optim.Adam(agent.parameters(), args.learning_rate, eps=args.adam_eps, fused=True)  # detail 3
        state = TrainState(agent, optimizer, Normalization(args, obs_dim), args.kl_coef)
        run.start(state)  # rank 0's weights to every worker, or the checkpoint's state (--resume); the writers
        for logs, episodes in train(args, envs, state, run.device, run.rank, run.world_size):
            if run.log(state, logs, episodes):  # TensorBoard, the console, checkpoints; True: a signal stops the run
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


CHECKPOINT_FORMAT = "ppo37 ppo_continuous.py checkpoint v2"  # from here on: this script's own checks and evaluation


def validate_args(args: Args, world_size: int) -> None:
    """Reject settings that cannot work, naming the flag and what would."""
    counts = ["total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "keep_checkpoints"]
    positive = ["learning_rate", "adam_eps", "clip_coef", "max_grad_norm", "kl_target", "target_kl"]
    non_negative = ["ent_coef", "vf_coef", "kl_coef", "clip_obs", "clip_reward", "checkpoint_every", "torch_threads"]
    check_args(args, world_size, [*counts, "eval_episodes"], positive, [*non_negative, "eval_every"])


def check_env(args: Args) -> tuple[int, str]:
    """Make one env of --env-id and check that this script trains on it; -> the rollout buffers' bytes, their flags."""
    try:
        with make_gym_env(args) as env:
            space, actions = env.observation_space, env.action_space
    except (gym.error.Error, ImportError, AttributeError, TypeError) as e:  # (a crafted checkpoint's id)
        how = "list ids with gymnasium.pprint_registry(); a module:EnvId's module must be here or on PYTHONPATH"
        raise UsageError(f"--env-id {args.env_id}: {(str(e).strip().splitlines() or [repr(e)])[0]} ({how})") from None
    if not isinstance(actions, gym.spaces.Box):
        raise UsageError(f"--env-id {args.env_id}: {type(actions).__name__} actions (Discrete ones: ppo_discrete.py)")
    if isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) >= 2:
        raise UsageError(f"--env-id {args.env_id}: images {space.shape}, Box actions; none of our scripts takes them")
    if not isinstance(gym.spaces.flatten_space(space), gym.spaces.Box):
        raise UsageError(f"--env-id {args.env_id}: a {type(space).__name__} observation space does not flatten")
    if args.capture_video and "rgb_array" not in env.metadata.get("render_modes", []):
        raise UsageError(f"--capture-video: {args.env_id} renders no rgb_array frames to record; drop the flag")
    step_bytes = 4 * gym.spaces.flatdim(space) + 4 * gym.spaces.flatdim(actions) + 32
    return args.num_envs * args.num_steps * step_bytes, f"--num-envs {args.num_envs} x --num-steps {args.num_steps}"


def load_model(path: str, device: torch.device = torch.device("cpu")):
    """-> (agent, obs_rms or None, the saved Args as a dict) of a checkpoint."""
    checkpoint = load_checkpoint(path, "--eval-checkpoint")
    saved, model, obs_rms = checkpoint["args"], checkpoint["model"], checkpoint["obs_rms"] and RunningMeanStd()
    obs_dim, action_dim = model["actor_trunk.0.weight"].shape[1], model["actor_mean.weight"].shape[0]
    agent = Agent(obs_dim, action_dim, saved["shared_network"], saved["state_dependent_std"]).to(device)
    load_state(agent, model, "--eval-checkpoint", path)
    obs_rms is None or load_state(obs_rms, checkpoint["obs_rms"], "--eval-checkpoint", path)
    return agent, obs_rms, saved


def evaluate(path, episodes: int, seed: int = 1, device=torch.device("cpu"), video_folder=None, deterministic=True):
    """Raw returns of the saved model on a fresh env, statistics frozen: its mean action (or sampled actions)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # seeded samples, and the caller's RNG left as it was
        torch.manual_seed(seed)
        agent, obs_rms, saved = load_model(path, device)
        envs = make_envs(Args(env_id=saved["env_id"], env_kwargs=saved.get("env_kwargs", ()), num_envs=1), video_folder)
        space, (obs, _), returns = envs.single_action_space, envs.reset(seed=seed), []
        low, high = space.low.reshape(-1), space.high.reshape(-1)
        while len(returns) < episodes:
            x = torch.tensor(normalize_obs(obs.reshape(1, -1), obs_rms, saved["clip_obs"]), device=device).float()
            action = agent.get_mean_action(x) if deterministic else agent.get_action_and_value(x)[0]
            action = env_actions(action.cpu().numpy(), low, high, saved["clip_action"])
            obs, _, _, _, info = envs.step(action.reshape(1, *space.shape))  # the env's own shape
            returns += [float(info["episode"]["r"][0])] if "episode" in info else []
        envs.close()
    return returns


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
