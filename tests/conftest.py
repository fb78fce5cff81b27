"""Shared fixtures and helpers: shrunk configurations that train in seconds on a 2-core CPU, the ``a2ls`` command
in this process and as a real process, and the checks several test files make."""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

os.environ.setdefault("MUJOCO_GL", "egl")
# One intra-op thread: tiny networks gain nothing from two, and a second thread spinning next to another
# process on a 2-core machine slows every op several-fold.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

from a2ls_lightning import ReplayDataModule, SACModule

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

# ``a2ls fit`` settings that train in seconds (the command's own tests and the newcomer's).
CLI_TINY = [
    "--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
    "--data.batch_size=32", "--data.capacity=5000", "--data.warmup_steps=100",
    "--data.eval_interval=600", "--data.eval_episodes=1", "--trainer.log_every_n_steps=20",
    "--trainer.enable_progress_bar=false",
]
# Short episodes (action repeat 8) and a checkpoint every 50 updates: runs that seeds, plots and exports read.
SEEDS_TINY = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16",
              "--model.network.encoder_hidden_dim=16", "--data.batch_size=16", "--data.capacity=3000",
              "--data.warmup_steps=40", "--data.eval_interval=400", "--data.eval_episodes=1", "--data.action_repeat=8",
              "--trainer.callbacks.every_n_train_steps=50", "--trainer.enable_progress_bar=false"]
# Smaller still, for runs that stop before training or train a handful of updates (5 unless a test says more).
QUICK = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
         "--data.batch_size=16",
         "--data.capacity=300", "--data.warmup_steps=40", "--data.eval_episodes=1", "--trainer.max_steps=5",
         "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


def tiny_module(**overrides) -> SACModule:
    kwargs = dict(hidden_dim=32, feature_dim=16, encoder_hidden_dim=16, num_filters=8, encoder_layers=None)
    kwargs.update(overrides)
    return SACModule.from_settings(**kwargs)


def tiny_data(**overrides) -> ReplayDataModule:
    kwargs = dict(batch_size=16, capacity=3000, warmup_steps=40, eval_interval=400, eval_episodes=1)
    kwargs.update(overrides)
    return ReplayDataModule(**kwargs)


def tiny_trainer(tmp_path, max_steps: int, **overrides) -> pl.Trainer:
    kwargs = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=str(tmp_path),
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


@pytest.fixture
def make_module():
    return tiny_module


@pytest.fixture
def make_data():
    return tiny_data


@pytest.fixture
def make_trainer(tmp_path):
    return lambda max_steps, **kw: tiny_trainer(tmp_path, max_steps, **kw)


# --- the a2ls command -------------------------------------------------------------------------------------------------
def process_env(**extra: str) -> dict[str, str]:
    """The environment of an ``a2ls`` process a test starts: this checkout's package first (not another install of
    it), ``tests/`` for the callbacks of ``cli_probe``, one thread."""
    path = os.pathsep.join([str(ROOT), str(TESTS)])
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), **extra)
    # A DDP test run in this process (ddp_spawn) leaves its rendezvous port here; a process started later picks a
    # free one of its own, as it would from a shell.
    env.pop("MASTER_PORT", None)
    return env


def a2ls(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real ``a2ls`` command in a process of its own (for what only a process shows: exit codes of the console
    script, signals, DDP ranks)."""
    return subprocess.run([sys.executable, "-m", "a2ls_lightning.cli", *args], cwd=cwd, env=process_env(), text=True,
                          capture_output=True, timeout=timeout)


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """``a2ls`` in this process (the console script's own ``main``): exit code, stdout, stderr."""
    from a2ls_lightning.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def run(args: list[str], capsys) -> tuple[int, str]:
    """``a2ls`` in this process: exit code and stderr."""
    code, _, err = run_main(args, capsys)
    return code, err


def assert_one_line(code: int, stderr: str, fragment: str, steps: list) -> None:
    """A refusal: exit 2, one ``a2ls: error:`` line holding ``fragment``, no traceback, no env step taken."""
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("a2ls: error:")]
    assert len(errors) == 1, stderr[-2000:]
    assert fragment in errors[0], errors[0]
    assert not steps, "an environment step was taken before the error"


@pytest.fixture
def no_env_steps(monkeypatch) -> list:
    """Watches the collector's ``step``: the list gets an entry for every environment step taken."""
    from a2ls_lightning.data.collector import EpisodeCollector

    steps = []
    original = EpisodeCollector.step

    def watched(self, policy=None):
        steps.append(1)
        return original(self, policy)

    monkeypatch.setattr(EpisodeCollector, "step", watched)
    return steps


# --- exact resume -------------------------------------------------------------------------------------------------
def resume_run(tmp_path, steps: int, ckpt_in=None, ckpt_out=None, module_settings=None, **data_settings):
    """A seeded tiny run of ``steps`` updates (from ``ckpt_in`` if given, saved to ``ckpt_out`` if given) that
    records its evaluations in ``data.evaluations``: (module, datamodule, trainer)."""
    pl.seed_everything(7)
    module = tiny_module(**{"aux_losses": None, **(module_settings or {})})
    data = tiny_data(seed=7, eval_interval=300, **data_settings)
    data.evaluations = {}
    data.add_eval_listener(lambda env_steps, value: data.evaluations.__setitem__(env_steps, value))
    trainer = tiny_trainer(tmp_path, steps)
    trainer.fit(module, data, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return module, data, trainer


def assert_same_state(a, b, da, db) -> None:
    """Two runs end in the same state: weights, Adam's moments, temperature, replay contents, collector counts."""
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(pa.float(), pb.float(), atol=1e-6, rtol=0), name
    oa, ob = a.optimizers().optimizer.state_dict(), b.optimizers().optimizer.state_dict()
    for key, sa in oa["state"].items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(sa[field].float(), ob["state"][key][field].float(), atol=1e-6, rtol=0), (key, field)
    assert torch.equal(a.learner.log_alpha, b.learner.log_alpha)
    sa, sb = da.replay.buffer.storage._storage, db.replay.buffer.storage._storage
    assert len(da.replay) == len(db.replay)
    for key in sa.keys():
        assert torch.equal(sa[key][: len(da.replay)], sb[key][: len(db.replay)]), key
    assert sorted(da.replay.sampler.valid_starts()) == sorted(db.replay.sampler.valid_starts())
    assert da.collector.env_steps == db.collector.env_steps and da.collector.episodes == db.collector.episodes


# --- other shared pieces --------------------------------------------------------------------------------------------
def fused_on_cpu() -> bool:
    """Whether this torch can fuse Adam on the CPU."""
    from a2ls_lightning.modules.optim import check_fused_adam

    try:
        check_fused_adam(torch.device("cpu"))
        return True
    except ValueError:
        return False


def fit_with_callback(module, callback, steps, ckpt_path=None, **trainer_kwargs) -> pl.Trainer:
    """A Trainer with one callback (a weighting rule) fitting ``module`` for ``steps`` steps (its own data)."""
    kwargs = {"max_steps": steps, "accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
              "enable_progress_bar": False, "enable_model_summary": False}
    kwargs.update(trainer_kwargs)
    trainer = pl.Trainer(callbacks=[callback], **kwargs)
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


@functools.cache
def benchmark_script():
    """``scripts/benchmark_learning.py`` loaded as a module (once per session)."""
    spec = importlib.util.spec_from_file_location("benchmark_learning", ROOT / "scripts" / "benchmark_learning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- pytest-xdist: what one worker runs together ---------------------------------------------------------------------
# setup.cfg runs the suite on every core (-n auto). Its default scheduling sends tests out one by one; these units
# keep together what must not be split (xdist's own xdist_group marks are not honoured with pytest 9's node ids,
# pytest-xdist issue 1386):
# - the tests that use a module-scoped fixture of their file (a trained run, a database server, compile's warm-up),
#   so one worker builds it once;
# - the DDP tests, one at a time: their two ranks take both cores, and each picks its own rendezvous port.
@functools.cache
def module_fixture_users(filename: str) -> frozenset[str] | None:
    """The tests of ``tests/<filename>`` that take one of its module-scoped fixtures (read from the source: the
    scheduler runs before any test module is imported); ``None`` when such a fixture is autouse (every test)."""
    path = TESTS / filename
    if not path.is_file():
        return frozenset()
    functions = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)]
    shared = set()
    for function in functions:
        for decorator in function.decorator_list:
            keywords = {k.arg: getattr(k.value, "value", None) for k in getattr(decorator, "keywords", [])}
            if keywords.get("scope") == "module":
                if keywords.get("autouse") is True:
                    return None
                shared.add(function.name)
    return frozenset(f.name for f in functions
                     if f.name.startswith("test") and shared & {a.arg for a in f.args.args})


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: ``"ddp"``, its module's path, or the test itself."""
    path, _, name = nodeid.partition("::")
    filename, function = path.rsplit("/", 1)[-1], name.split("[", 1)[0]
    if filename.startswith("test_ddp") or function.startswith("test_ddp"):
        return "ddp"
    users = module_fixture_users(filename)
    if users is None or function in users:
        return path
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduler (whole units to a worker, the largest first) over :func:`work_unit`; an explicit
    ``--dist`` other than the default ``load`` is left to xdist."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return Units(config, log)


def a2ls_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``a2ls ARGS`` run in ``cwd`` by this process (for tests where the process itself is not what is tested: no
    interpreter start-up and imports per call): exit code, stdout and stderr, as :func:`a2ls` gives them."""
    import contextlib
    import io

    from a2ls_lightning.cli import main

    out, err, code, before = io.StringIO(), io.StringIO(), 0, os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exit_:
                code = int(exit_.code or 0)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


class TinyContractModule(pl.LightningModule):
    """A plain LightningModule through the weighting contract (RL-AUX's and the credit's tests train it): shared
    encoder, main head, one per-example auxiliary head; batch of update ``t`` on rank ``r`` from seed
    ``1000·t + r``; ``heldout_main_loss`` on a batch from seed ``10⁶ + …``."""

    per_example_losses = True

    def __init__(self, out_dir: str | None = None) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
        self.main_head, self.aux_head = nn.Linear(8, 1), nn.Linear(8, 2)
        self.aux_weighting = None
        self._kept = None

    def shared_parameters(self):
        return list(self.encoder.parameters())

    def data(self, seed: int, n: int = 16):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 4, generator=g)
        return x, x.sum(1, keepdim=True).sin(), torch.randn(n, 2, generator=g)

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> torch.Tensor:
        if resample:
            self._kept = self.data(10**6 + 1000 * self.global_step + self.global_rank, 64)
        x, y, _ = self._kept
        with torch.set_grad_enabled(with_graph):
            return (self.main_head(self.encoder(x)) - y).pow(2).mean()

    def training_step(self, batch, batch_idx):
        x, y, ya = self.data(1000 * self.global_step + self.global_rank)
        z = self.encoder(x)
        main = (self.main_head(z) - y).pow(2).mean()
        aux = {"a": (self.aux_head(z) - ya).pow(2).mean(1)}  # [B]
        total = self.aux_weighting.combine(main, aux, self.shared_parameters(), example_features=x)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()

    def on_train_end(self):
        if self.out_dir:
            torch.save({"state": self.aux_weighting.state_dict(),
                        "params": {k: v.detach().cpu() for k, v in self.state_dict().items()}},
                       f"{self.out_dir}/rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1000, 1), batch_size=1)
