"""``examples/quickstart.ipynb`` executed by a real Jupyter kernel in its tiny mode (through nbclient, and the way a
user runs it without a browser: ``jupyter nbconvert --execute``), and its script twin."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
PYTHON_NAMES = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}


def _python3_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``python3`` kernel name, made to run this interpreter.

    The venv's ipykernel provides ``python3`` (``sys.prefix/share/jupyter/kernels``, or ipykernel's own spec),
    launched as ``python`` which jupyter_client replaces by ``sys.executable``. When another ``python3`` spec
    shadows it (a user-wide one pointing at another interpreter), one for this interpreter is written in
    ``tmp_path`` and put first on ``JUPYTER_PATH``: nothing is written outside the test's folder.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
        ours = argv0 in PYTHON_NAMES or Path(argv0).resolve() == Path(sys.executable).resolve()
    except NoSuchKernel:
        ours = False
    if not ours:
        spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (test)", "language": "python"}))
        monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(tmp_path / "jupyter"),
                                                                          os.environ.get("JUPYTER_PATH")])))
    return "python3"


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_notebook_runs_in_a_real_kernel(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "A2LS_NOTEBOOK_TINY=1" in nb.cells[0].source  # the first cell says how the test shrinks it
    # the notebook as committed: no outputs, no execution counts
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"))
    monkeypatch.setenv("A2LS_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    kernel = _python3_kernel(tmp_path, monkeypatch)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name=kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the cell and traceback) if any cell fails

    out = _stdout(nb)
    assert f"KERNEL_PREFIX={sys.prefix}\n" in out  # the kernel ran this interpreter (the venv's)
    final = re.search(r"^final eval/return = (\S+)$", out, re.MULTILINE)
    assert final and math.isfinite(float(final[1])), out
    recorded = re.search(r"^recorded log steps = (\d+)$", out, re.MULTILINE)
    assert recorded and int(recorded[1]) > 0, out  # the notebook's own callback recorded something
    weights = dict(re.findall(r"^OLAux weight (\S+) = (\S+)$", out, re.MULTILINE))
    assert set(weights) == {"a2v", "fwd"} and all(math.isfinite(float(w)) for w in weights.values()), out
    evaluations = re.search(r"^evaluations \(env steps, return\): (.+)$", out, re.MULTILINE)
    assert evaluations and evaluations[1].startswith("[(200, "), out  # read back from the TensorBoard logs
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "no cell displayed a PNG"
    # its logs stayed in the working directory it was given
    assert list((tmp_path / "runs" / "quickstart_notebook").rglob("events.out.tfevents*"))


def test_nbconvert_executes_the_notebook_with_our_progress_bar_and_no_widget_warning(tmp_path, monkeypatch):
    """``jupyter nbconvert --to notebook --execute`` (the test install has it) runs a copy of the notebook."""
    pytest.importorskip("nbconvert")
    copy = tmp_path / "quickstart.ipynb"
    shutil.copyfile(NOTEBOOK, copy)
    monkeypatch.setenv("A2LS_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    kernel = _python3_kernel(tmp_path, monkeypatch)
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         f"--ExecutePreprocessor.kernel_name={kernel}", "--ExecutePreprocessor.timeout=300", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(tmp_path / "quickstart.nbconvert.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    everything = json.dumps(outputs) + done.stderr
    assert "ipywidgets" not in everything and "IProgress" not in everything, everything[-3000:]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # no widget
    out = _stdout(nb)
    # our bar, as plain lines (no ipywidgets here), not Lightning's bar of batches ("Epoch 0")
    assert re.search(r"^updates 60/60 \(100%\) \| .* upd/s \| env_steps=\d+", out, re.MULTILINE), out
    assert "Epoch 0" not in everything and "\r" not in out
    assert re.search(r"^final eval/return = \S+$", out, re.MULTILINE), out
    assert list((tmp_path / "runs" / "quickstart_notebook").rglob("events.out.tfevents*"))  # beside the notebook


def test_notebook_is_the_script_twin():
    """``examples/quickstart.ipynb`` is what ``examples/sync_notebook.py`` writes from ``quickstart.py``."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from sync_notebook import notebook
    finally:
        sys.path.remove(str(EXAMPLES))
    expected = notebook(EXAMPLES / "quickstart.py")
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in expected.cells], (
        "examples/quickstart.ipynb is out of date: run python examples/sync_notebook.py")
    assert committed.metadata["kernelspec"]["name"] == "python3"
    text = NOTEBOOK.read_text() + (EXAMPLES / "quickstart.py").read_text()
    assert "/work/" not in text and "/home/" not in text and "/tmp/" not in text  # nothing outside the repository
