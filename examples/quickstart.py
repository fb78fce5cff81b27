# %% [markdown]
# # Quickstart: SAC with two auxiliary losses weighted by OL-AUX
#
# This notebook trains SAC on state-based `cheetah-run` (DeepMind Control) with two auxiliary losses, A2-winner-v
# and forward dynamics, whose weights are learned online by the `OLAux` callback. A callback of our own records the
# weights and metrics while it trains; afterwards the TensorBoard logs are read back to plot the evaluation return
# and the auxiliary weights.
#
# - Run it in Jupyter, or as a plain script: `python examples/quickstart.py` (its twin, the same code).
# - The defaults train for a few minutes on a laptop CPU (10000 updates, 44k env steps: about 4 minutes of one
#   core; the evaluation return rises from ~0 to a few hundred). `a2ls fit` trains 24000 updates (100k env steps).
# - **Tiny mode**: with the environment variable `A2LS_NOTEBOOK_TINY=1` the parameters cell shrinks everything
#   so that the notebook runs in seconds (this is what `tests/test_notebook.py` does).
# - Logs go to `runs/quickstart_notebook/` under the working directory (in Jupyter, the notebook's folder:
#   `examples/runs/`, which git ignores); see them with `tensorboard --logdir runs/quickstart_notebook`.
# - Without a browser: `jupyter nbconvert --to notebook --execute examples/quickstart.ipynb` (installed by
#   `pip install -e ".[test]"`) writes the executed copy `examples/quickstart.nbconvert.ipynb`.

# %% [markdown]
# ## Parameters

# %%
import os

MAX_STEPS = 10_000  # gradient updates; one agent step (4 env steps on cheetah-run) is collected before each
WARMUP_STEPS = 1000  # agent steps of random actions before the first update
HIDDEN_DIM = 256  # width of the actor and critic MLPs
BATCH_SIZE = 256  # replay slices per update
CAPACITY = 100_000  # replay capacity (states)
EVAL_INTERVAL = 5000  # env steps between evaluations
EVAL_EPISODES = 3  # episodes per evaluation
LOG_EVERY = 50  # updates between logged (and recorded) steps
SEED = 1
LOG_DIR = "runs/quickstart_notebook"

if os.environ.get("A2LS_NOTEBOOK_TINY") == "1":  # seconds, not minutes: the test's settings
    MAX_STEPS, WARMUP_STEPS, HIDDEN_DIM, BATCH_SIZE, CAPACITY = 60, 40, 32, 16, 3000
    EVAL_INTERVAL, EVAL_EPISODES, LOG_EVERY = 200, 1, 10

# %% [markdown]
# ## Imports
#
# `SACModule` is the LightningModule (SAC and its auxiliary losses), `ReplayDataModule` the environment, replay
# buffer and data collection; `OLAux` and `UpdateProgressBar` are Lightning callbacks; `a2ls_lightning.plotting`
# reads TensorBoard logs. Like `a2ls fit`, torch gets one thread per two cores: these small networks gain
# nothing from more, and a thread spinning beside a busy process slows every operation several-fold.

# %%
# %matplotlib inline
import math

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from a2ls_lightning import NetworkSettings, ReplayDataModule, SACModule
from a2ls_lightning.builder import default_threads
from a2ls_lightning.callbacks import OLAux, UpdateProgressBar
from a2ls_lightning.plotting import eval_curve, read_scalars

torch.set_num_threads(default_threads())

# %% [markdown]
# ## Model and data
#
# Two auxiliary losses, by preset name (`a2ls losses` lists them), each with a name of our choosing: `a2v` and
# `fwd`. Their losses are logged as `train/aux_<name>_loss` and their weights as `aux_weight/<name>`.

# %%
pl.seed_everything(SEED)
model = SACModule(
    network=NetworkSettings(encoder="mlp", hidden_dim=HIDDEN_DIM),
    aux_losses={"a2v": "a2_winner_v", "fwd": "forward_dynamics"},
)
data = ReplayDataModule(
    task="cheetah-run",
    batch_size=BATCH_SIZE,
    capacity=CAPACITY,
    warmup_steps=WARMUP_STEPS,
    eval_interval=EVAL_INTERVAL,
    eval_episodes=EVAL_EPISODES,
    seed=SEED,
)

# %% [markdown]
# ## A callback of our own
#
# Any `lightning.pytorch.Callback` plugs in next to `OLAux`. This one keeps, at every logged step, the current
# OL-AUX weights and the metrics Lightning holds (`trainer.callback_metrics`: losses, and `eval/return` once
# the first evaluation ran).


# %%
class Recorder(pl.Callback):
    """Records ``{"step", "weight/<name>", <metric>: value}`` every ``every`` updates into ``self.records``."""

    def __init__(self, weighting: OLAux, every: int) -> None:
        self.weighting, self.every = weighting, every
        self.records: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            record = {"step": trainer.global_step}
            record.update({f"weight/{name}": w for name, w in self.weighting.weights.items()})
            record.update({key: float(value) for key, value in trainer.callback_metrics.items()})
            self.records.append(record)


# %% [markdown]
# ## Train
#
# `OLAux()` (its defaults: a weight update every 5 updates, log balancing) installs itself as the module's
# auxiliary-loss weighting. `trainer.max_steps` counts gradient updates, and `UpdateProgressBar` shows them with
# the env steps and the last evaluation return (tqdm's notebook bar if `ipywidgets` is installed, otherwise a
# line every 5%), in place of Lightning's bar of batches.

# %%
olaux = OLAux()
recorder = Recorder(olaux, every=LOG_EVERY)
logger = TensorBoardLogger(LOG_DIR, name="cheetah_olaux")
trainer = pl.Trainer(
    max_steps=MAX_STEPS,
    accelerator="cpu",
    logger=logger,
    callbacks=[olaux, recorder, UpdateProgressBar()],
    log_every_n_steps=LOG_EVERY,
    enable_checkpointing=False,
    enable_model_summary=False,
    default_root_dir=LOG_DIR,
)
trainer.fit(model, datamodule=data)
print(f"final eval/return = {float(trainer.callback_metrics['eval/return']):.3f}")

# %% [markdown]
# ## What the callback recorded
#
# The OL-AUX weights start at 1 and move towards the losses whose gradients help the critic loss decrease.

# %%
print(f"recorded log steps = {len(recorder.records)}")
print("last record:", {k: round(v, 4) for k, v in recorder.records[-1].items()})
for name, weight in olaux.weights.items():
    print(f"OLAux weight {name} = {weight:.4f}")
assert all(math.isfinite(w) for w in olaux.weights.values())

# %% [markdown]
# ## Plot the logs
#
# `read_scalars` reads every scalar of the run's TensorBoard event files; `eval_curve` pairs `eval/return` with
# `eval/env_steps` (one point per evaluation). The auxiliary weights are the `aux_weight/<name>` scalars, logged
# every `LOG_EVERY` updates.

# %%
scalars = read_scalars(logger.log_dir)
env_steps, returns = eval_curve(scalars)
print("evaluations (env steps, return):", [(int(x), round(float(y), 2)) for x, y in zip(env_steps, returns)])

fig, (ax_return, ax_weight) = plt.subplots(1, 2, figsize=(11, 4))
ax_return.plot(env_steps, returns, marker="o")
ax_return.set(xlabel="env steps", ylabel="eval/return", title="evaluation return")
for tag in sorted(t for t in scalars if t.startswith("aux_weight/")):
    updates, weights = zip(*scalars[tag])
    ax_weight.plot(updates, weights, label=tag.split("/", 1)[1])
ax_weight.set(xlabel="updates", ylabel="weight", title="OL-AUX auxiliary weights")
ax_weight.legend()
fig.tight_layout()
fig.savefig(os.path.join(logger.log_dir, "quickstart.png"))
plt.show()

# %% [markdown]
# ## Next
#
# - Several runs (seeds, variants) side by side, with a table of final return and AULC:
#   `a2ls plot --group olaux='runs/quickstart_notebook/cheetah_olaux/version_*' --out compare.png`
#   (or `a2ls_lightning.plotting.plot_groups` / `markdown_table` here).
# - The same training from the command line: `a2ls fit --model.aux_losses='{a2v: a2_winner_v, fwd: forward_dynamics}'
#   --trainer.callbacks+=a2ls_lightning.callbacks.OLAux`.
