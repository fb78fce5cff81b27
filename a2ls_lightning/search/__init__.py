"""Automated auxiliary-loss search (A2LS's evolution) on Optuna.

Modules, one concept each:

- :mod:`.settings`: the ``search:`` section of a search config (:class:`SearchSettings`);
- :mod:`.space`: the searched space and the unvalidated :class:`Genome`; loss rejection (``SearchSpace.admit``);
- :mod:`.mutation`: mutation and crossover of genomes;
- :mod:`.evolution`: a stage's population from the survivors (deterministic in the seed);
- :mod:`.ledger`: how stages and slots are stored as Optuna trials;
- :mod:`.sampler`: :class:`EvolutionSampler`, the evolution as an Optuna sampler;
- :mod:`.storage`: the database (embedded SQLite or a URL) and the study;
- :mod:`.training`: one training run of the base config on a budget and its evaluation curve;
- :mod:`.objective`: training (or scoring) a trial's candidate; the fitness;
- :mod:`.runner`: worker processes;
- :mod:`.patterns`, :mod:`.report`: the analysis; :mod:`.cli`: ``a2ls search``.
"""

from a2ls_lightning.search.evolution import Candidate, stage_population
from a2ls_lightning.search.objective import CandidateObjective, FitnessObjective, curve_fitness
from a2ls_lightning.search.sampler import EvolutionSampler, candidate_of
from a2ls_lightning.search.settings import SearchSettings, load_search_config
from a2ls_lightning.search.space import Genome, SearchSpace

__all__ = [
    "Candidate", "CandidateObjective", "EvolutionSampler", "FitnessObjective", "Genome", "SearchSettings",
    "SearchSpace", "candidate_of", "curve_fitness", "load_search_config", "stage_population",
]
