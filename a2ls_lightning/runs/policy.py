"""A trained policy from Python, and for deployment without this package.

    from a2ls_lightning import load_policy

    policy = load_policy("runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt")
    env = policy.make_env(seed=0)                        # the checkpoint's task and settings (TorchRL)
    action = policy.act(env.reset()["observation"])      # numpy or torch, one observation or a batch
    policy.module                                        # a plain torch.nn.Module: [N, *obs_shape] -> [N, A]

:func:`export_policy` (``a2ls export``) writes :attr:`Policy.module` with ``torch.export``:
``torch.export.load(path).module()`` runs it with torch alone (no import of this package), and its ``a2ls.json``
extra file records the observation shape, the action size, the task and its settings.

Observations are what the environment gives (state: ``[obs_dim]`` floats; pixels: ``[3 * frame_stack, H, W]``
uint8, the last ``frame_stack`` frames stacked on channels as :class:`~a2ls_lightning.data.collector.EpisodeCollector`
does); actions lie in ``[-1, 1]``, the DMC action range.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from a2ls_lightning.builder import read_checkpoint
from a2ls_lightning.modules.augment import center_crop
from a2ls_lightning.validation import check

__all__ = ["Policy", "PolicyNetwork", "export_policy", "load_policy"]

#: The extra file of an exported policy that describes it (JSON).
METADATA = "a2ls.json"


class PolicyNetwork(nn.Module):
    """The actor of a trained agent as a plain module: encoder trunk, actor head, tanh-Gaussian actor.

    ``forward(obs [N, *obs_shape]) -> action [N, A]`` in ``[-1, 1]``: ``tanh`` of the mean (the deterministic
    policy, what evaluation plays). The same arithmetic as the agent's own acting (tested equal): state
    observations are normalised when the agent learned a normaliser; pixel observations are centre-cropped.
    """

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        # Only what acting reads: no critic, no target networks, no auxiliary heads in a deployed file.
        self.trunk = learner.encoder.trunk
        self.actor_head = learner.actor_head
        self.actor = learner.actor
        self.normalizer = learner.obs_normalizer  # None for pixels and without model.obs_norm
        self.pixels = bool(learner.pixels)
        self.crop_size = int(learner.crop_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = center_crop(obs, self.crop_size) if self.pixels else obs.float()
        if self.normalizer is not None:
            x = self.normalizer(x)
        action, _ = self.actor(self.actor_head(self.trunk(x)), deterministic=True)
        return action


class Policy:
    """A checkpoint's policy (CPU, eval mode); see :func:`load_policy`.

    Attributes:
        module: the deterministic policy as a plain ``torch.nn.Module`` (:class:`PolicyNetwork`).
        obs_shape: one observation's shape, e.g. ``(17,)`` or ``(9, 84, 84)``.
        action_dim: ``A``.
        settings: the checkpoint's task and data settings (``task``, ``from_pixels``, ``action_repeat``, ...).
    """

    def __init__(self, agent: nn.Module, settings: dict[str, Any]) -> None:
        self._agent = agent
        self.module = PolicyNetwork(agent.learner).eval()
        obs_shape, action_dim = agent._env_spec
        self.obs_shape, self.action_dim = tuple(int(s) for s in obs_shape), int(action_dim)
        self.settings = settings

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True) -> Any:
        """Actions for observations: ``[*obs_shape]`` → ``[A]`` or ``[N, *obs_shape]`` → ``[N, A]``.

        Args:
            obs: a numpy array or a tensor (of any float dtype for state, uint8 for pixels).
            deterministic: ``tanh`` of the mean (evaluation); ``False`` samples from the policy (exploration).

        Returns:
            Actions of the same kind as ``obs`` (numpy ``float32`` or a CPU tensor).
        """
        as_numpy = not isinstance(obs, torch.Tensor)
        x = torch.as_tensor(np.asarray(obs) if as_numpy else obs).cpu()
        single = tuple(x.shape) == self.obs_shape
        check(single or tuple(x.shape[1:]) == self.obs_shape and x.dim() == len(self.obs_shape) + 1,
              f"obs: shape {tuple(x.shape)}; allowed: {self.obs_shape} or (N, {', '.join(map(str, self.obs_shape))})")
        batch = x.unsqueeze(0) if single else x
        action = self.module(batch) if deterministic else self._agent.act(batch, deterministic=False)
        action = action[0] if single else action
        return action.numpy() if as_numpy else action

    def make_env(self, seed: int = 0, task: str | None = None) -> Any:
        """The checkpoint's environment (TorchRL): its task, action repeat, pixels and image size."""
        from a2ls_lightning.data.envs import default_action_repeat, make_env

        s = self.settings
        task = task or s["task"]
        repeat = (s.get("action_repeat") if task == s["task"] else None) or default_action_repeat(task)
        return make_env(task, s["from_pixels"], repeat, s["image_size"], seed=seed,
                        render_effects=s["render_effects"])


def load_policy(ckpt: str | Path | dict[str, Any]) -> Policy:
    """The policy of a checkpoint written by ``a2ls fit`` (a path, or the checkpoint's dict).

    Raises:
        ValueError: one line naming the file when it is missing or not an ``a2ls fit`` checkpoint.
    """
    from a2ls_lightning.runs.evaluate import load_policy as load_agent

    checkpoint = ckpt if isinstance(ckpt, dict) else read_checkpoint(ckpt)
    check("env_spec" in checkpoint, f"ckpt_path: {ckpt} is not an a2ls_lightning checkpoint (no env_spec)")
    data = {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    settings = {"task": data.get("task", "cheetah-run"), "from_pixels": bool(data.get("from_pixels", False)),
                "action_repeat": data.get("action_repeat"), "image_size": int(data.get("image_size", 100)),
                "frame_stack": int(data.get("frame_stack", 3)) if data.get("from_pixels") else 1,
                "render_effects": bool(data.get("render_effects", True)),
                "update": int(checkpoint.get("global_step", 0))}
    return Policy(load_agent(checkpoint), settings)


def export_policy(ckpt: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the checkpoint's deterministic policy to ``out`` with ``torch.export`` (any batch size), check that the
    file gives the policy's actions, and return the metadata stored in it (its ``a2ls.json`` extra file).

    With torch alone: ``torch.export.load(out).module()(obs)``, ``obs`` ``[N, *obs_shape]`` (state: float32;
    pixels: uint8) → actions ``[N, A]`` in ``[-1, 1]``. Name it ``*.pt2``: ``torch.export.load`` warns on another
    name given as a path (an open file of any name loads quietly). ``torch.export`` rather than TorchScript:
    torch 2.13 deprecates ``torch.jit``.
    """
    policy = load_policy(ckpt)
    dtype = torch.uint8 if policy.settings["from_pixels"] else torch.float32
    generator = torch.Generator().manual_seed(0)
    example = (torch.randint(0, 256, (2, *policy.obs_shape), generator=generator, dtype=dtype) if dtype == torch.uint8
               else torch.randn((2, *policy.obs_shape), generator=generator))
    program = torch.export.export(policy.module, (example,), dynamic_shapes={"obs": {0: torch.export.Dim("batch")}})
    metadata = {"obs_shape": list(policy.obs_shape), "obs_dtype": str(dtype).removeprefix("torch."),
                "action_dim": policy.action_dim, "action_range": [-1.0, 1.0], **policy.settings,
                "checkpoint": str(ckpt)}
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    # Through open files: torch.export warns on a path that does not end in .pt2, never on a file object.
    with open(tmp, "wb") as file:
        torch.export.save(program, file, extra_files={METADATA: json.dumps(metadata)})
    with open(tmp, "rb") as file, torch.no_grad():
        loaded = torch.export.load(file).module()
        same = all(torch.equal(loaded(x), policy.module(x)) for x in (example, example[:1]))
    if not same:
        tmp.unlink()
        raise RuntimeError("the exported policy gives other actions than the checkpoint's: not written")
    tmp.replace(out)
    return metadata
