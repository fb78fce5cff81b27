"""Automated auxiliary-loss search on Optuna: the evolution of A2LS (He et al. 2022, "Reinforcement Learning
with Automated Auxiliary Loss Search", arXiv 2210.06041).

Modules, one concept each (the ``a2ls search`` command is :mod:`a2ls_lightning.cli.search`):

- :mod:`.settings`: the ``search:`` section of a search config (:class:`SearchSettings`);
- :mod:`.space`: the searched space, genomes, loss rejection (``SearchSpace.admit``), mutation, crossover, and
  each stage's population (:func:`stage_population`, deterministic in the seed);
- :mod:`.sampler`: how stages and slots are stored as Optuna trials (``Ledger``) and :class:`EvolutionSampler`,
  the evolution as an Optuna sampler;
- :mod:`.objective`: one training run on an env-step budget and its learning curve; training (or scoring) a
  trial's candidate; the fitness;
- :mod:`.paired`: a candidate's fitness over seeds, paired with the stage's SAC baseline, and its interval;
- :mod:`.fidelity`: which cheap fidelity ranks like the 100k-step result, measured on stored runs
  (``a2ls search fidelity``);
- :mod:`.runner`: the database (embedded SQLite or a URL), the study, and the worker processes;
- :mod:`.report`: the report of a search and its pattern analysis.
"""

from a2ls_lightning.search.objective import (
    CandidateObjective,
    FitnessObjective,
    SeedFitnessObjective,
    curve_fitness,
)
from a2ls_lightning.search.paired import Paired, paired_fitness
from a2ls_lightning.search.sampler import EvolutionSampler, candidate_of
from a2ls_lightning.search.settings import SearchSettings, load_search_config
from a2ls_lightning.search.space import Candidate, Genome, SearchSpace, stage_population

__all__ = [
    "Candidate", "CandidateObjective", "EvolutionSampler", "FitnessObjective", "Genome", "Paired", "SearchSettings",
    "SearchSpace", "SeedFitnessObjective", "candidate_of", "curve_fitness", "load_search_config", "paired_fitness",
    "stage_population",
]
