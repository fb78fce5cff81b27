"""A plain single-file SAC with CleanRL's structure, the reference of the end-to-end speed comparison (P0).

What it follows (facts of CleanRL's ``sac_continuous_action.py``, re-written here, not copied): NumPy replay arrays
(observation, next observation, action, reward, termination) sampled with uniform indices; Q-networks
(obs ⊕ action → 256 → 256 → 1, ReLU), twin, with soft-updated targets every update (τ 0.005); a tanh-Gaussian actor
(obs → 256 → 256 → mean, log-std squashed into [−5, 2]); automatic temperature; one Adam for both Q-networks
(lr 1e-3) and one for the actor (lr 3e-4); every second update, two actor and temperature steps; one critic update
per agent step after the warm-up, batch 256.

What it shares with our benchmark protocol instead of CleanRL's gym set-up: the task (dm_control cheetah-run, the
state vector flattened), action repeat 4 and 1000 uniformly random warm-up agent steps. Networks at CleanRL's 256
width, as our benchmark config's. No logging, no evaluation, no checkpoints: the loop at its leanest.

    python scripts/sac_reference.py --updates 2000           # prints updates/s after the first 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from dm_control import suite
from torch import nn

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class SoftQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + act_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``[B, O]``, ``[B, A]`` → ``[B, 1]``."""
        return self.net(torch.cat([obs, act], 1))


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean, self.log_std = nn.Linear(hidden, act_dim), nn.Linear(hidden, act_dim)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, O]`` → (action ``[B, A]`` in [−1, 1], log-probability ``[B, 1]``)."""
        h = self.trunk(obs)
        mean, log_std = self.mean(h), torch.tanh(self.log_std(h))
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)
        normal = torch.distributions.Normal(mean, log_std.exp())
        u = normal.rsample()
        action = torch.tanh(u)
        log_prob = normal.log_prob(u) - torch.log(1 - action.pow(2) + 1e-6)
        return action, log_prob.sum(1, keepdim=True)


class Env:
    """dm_control task, flat float32 state, ``repeat`` physics steps per agent step (rewards summed)."""

    def __init__(self, domain: str, task: str, repeat: int, seed: int) -> None:
        self.env, self.repeat = suite.load(domain, task, task_kwargs={"random": seed}), repeat
        self.act_dim = self.env.action_spec().shape[0]

    def _flat(self, ts) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in ts.observation.values()])

    def reset(self) -> np.ndarray:
        return self._flat(self.env.reset())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        reward = 0.0
        for _ in range(self.repeat):
            ts = self.env.step(action)
            reward += ts.reward or 0.0
            if ts.last():
                break
        return self._flat(ts), reward, ts.last()


def run(updates: int, warmup: int = 1000, batch: int = 256, hidden: int = 256, seed: int = 1,
        clock=time.process_time, skip: int = 200) -> float:
    """Train for ``updates`` updates; return updates/s measured after the first ``skip`` (the loop's steady rate:
    env steps, action selection, sampling, updates)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = Env("cheetah", "run", 4, seed)
    obs = env.reset()
    obs_dim, act_dim = obs.shape[0], env.act_dim
    capacity = warmup + updates + 1
    buf_obs, buf_next = np.zeros((capacity, obs_dim), np.float32), np.zeros((capacity, obs_dim), np.float32)
    buf_act, buf_rew = np.zeros((capacity, act_dim), np.float32), np.zeros((capacity, 1), np.float32)
    buf_done = np.zeros((capacity, 1), np.float32)
    actor, q1, q2 = Actor(obs_dim, act_dim, hidden), SoftQ(obs_dim, act_dim, hidden), SoftQ(obs_dim, act_dim, hidden)
    q1_t, q2_t = SoftQ(obs_dim, act_dim, hidden), SoftQ(obs_dim, act_dim, hidden)
    q1_t.load_state_dict(q1.state_dict())
    q2_t.load_state_dict(q2.state_dict())
    q_opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=1e-3)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=3e-4)
    log_alpha = torch.zeros(1, requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=1e-3)
    target_entropy = -float(act_dim)
    size, start = 0, None
    for step in range(warmup + updates):
        if step < warmup:
            action = rng.uniform(-1, 1, act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor.sample(torch.as_tensor(obs)[None])[0][0].numpy()
        next_obs, reward, done = env.step(action)
        buf_obs[size], buf_next[size], buf_act[size], buf_rew[size] = obs, next_obs, action, reward
        buf_done[size] = 0.0  # DMC episodes end by time limit only: bootstrap through them
        size += 1
        obs = env.reset() if done else next_obs
        if step < warmup:
            continue
        update = step - warmup
        if update == skip:
            start = clock()
        idx = rng.integers(0, size, batch)
        o, o2 = torch.as_tensor(buf_obs[idx]), torch.as_tensor(buf_next[idx])
        a, r, d = torch.as_tensor(buf_act[idx]), torch.as_tensor(buf_rew[idx]), torch.as_tensor(buf_done[idx])
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = actor.sample(o2)
            target = r + 0.99 * (1 - d) * (torch.min(q1_t(o2, a2), q2_t(o2, a2)) - alpha * logp2)
        q_loss = F.mse_loss(q1(o, a), target) + F.mse_loss(q2(o, a), target)
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        if update % 2 == 0:
            for _ in range(2):  # CleanRL's delayed policy update, compensated
                pi, logp = actor.sample(o)
                actor_loss = (alpha * logp - torch.min(q1(o, pi), q2(o, pi))).mean()
                actor_opt.zero_grad()
                actor_loss.backward()
                actor_opt.step()
                with torch.no_grad():
                    _, logp = actor.sample(o)
                alpha_loss = (-log_alpha.exp() * (logp + target_entropy)).mean()
                alpha_opt.zero_grad()
                alpha_loss.backward()
                alpha_opt.step()
                alpha = log_alpha.exp().detach()
        with torch.no_grad():
            for net, tgt in ((q1, q1_t), (q2, q2_t)):
                for p, pt in zip(net.parameters(), tgt.parameters()):
                    pt.mul_(0.995).add_(p, alpha=0.005)
    return (updates - skip) / (clock() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"reference SAC (CleanRL's structure): {run(args.updates):.1f} updates/s (CPU time)")


if __name__ == "__main__":
    main()
