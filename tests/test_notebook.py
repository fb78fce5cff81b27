"""``examples/quickstart.ipynb`` executed by a real Jupyter kernel (nbclient) in its tiny mode, and its script twin."""

from __future__ import annotations

import json
import math
import os
import re
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
