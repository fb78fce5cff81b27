"""What a user does with runs after (and around) training: evaluate and watch a checkpoint
(:func:`evaluate_checkpoint`, ``a2ls evaluate``) and train several seeds at once (:func:`run_seeds`,
``a2ls fit --seeds``; a runner of one's own built on :func:`run_seed` stays safe to stop inside
:func:`forwarding_signals`), and use a trained policy from Python (:func:`load_policy`) or export it for torch alone
(:func:`export_policy`, ``a2ls export``). Above the builder, below the command line."""

from a2ls_lightning.runs.evaluate import EvaluationResult, evaluate_checkpoint
from a2ls_lightning.runs.multirun import SeedResult, run_seed, run_seeds
from a2ls_lightning.runs.policy import Policy, PolicyNetwork, export_policy, load_policy
from a2ls_lightning.runs.supervise import FolderLock, forwarding_signals

__all__ = ["EvaluationResult", "FolderLock", "Policy", "PolicyNetwork", "SeedResult", "evaluate_checkpoint",
           "export_policy", "forwarding_signals", "load_policy", "run_seed", "run_seeds"]
