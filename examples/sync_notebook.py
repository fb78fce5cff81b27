"""Write ``quickstart.ipynb`` from its plain-script twin ``quickstart.py`` (cells marked ``# %%``, no outputs).

    python examples/sync_notebook.py          # after editing quickstart.py

``# %% [markdown]`` cells hold commented Markdown; a ``# %matplotlib ...`` line of a code cell becomes the magic.
``tests/test_notebook.py`` checks that the committed notebook is what this writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
MAGIC = re.compile(r"^# (%matplotlib .*)$")


def script_cells(text: str) -> list[tuple[str, str]]:
    """``[(cell_type, source), ...]`` of a percent-format script (``"markdown"`` or ``"code"``)."""
    cells = []
    for chunk in re.split(r"^# %%", text, flags=re.MULTILINE)[1:]:
        header, _, body = chunk.partition("\n")
        if header.strip() == "[markdown]":
            lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.strip().splitlines()]
            cells.append(("markdown", "\n".join(lines)))
        else:
            cells.append(("code", "\n".join(MAGIC.sub(r"\1", line) for line in body.strip().splitlines())))
    return cells


def notebook(script: Path) -> nbformat.NotebookNode:
    """The notebook of ``script``: its cells, no outputs, the ``python3`` kernel."""
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    nb = nbformat.v4.new_notebook()
    nb.cells = [make[kind](source) for kind, source in script_cells(script.read_text())]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids: regenerating an unchanged script changes nothing
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    nb = notebook(HERE / "quickstart.py")
    nbformat.validate(nb)
    nbformat.write(nb, HERE / "quickstart.ipynb")
    print(f"wrote {HERE / 'quickstart.ipynb'} ({len(nb.cells)} cells)")


if __name__ == "__main__":
    main()
