"""Start-up time of the ``a2ls`` command: wall time of ``a2ls --help``, ``a2ls losses``, ``a2ls plot --help``,
``a2ls evaluate --help`` and ``a2ls fit --help`` (median of ``--repeat`` runs, each a fresh interpreter), and the
heaviest imports of each (``python -X importtime``), so a regression names its culprit.

    python scripts/benchmark_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["losses"], ["plot", "--help"], ["evaluate", "--help"], ["fit", "--help"])
RUN = "import sys; from a2ls_lightning.cli import main; sys.argv = ['a2ls', *sys.argv[1:]]; main()"


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def heaviest_imports(args: list[str], top: int = 3) -> str:
    """The ``top`` top-level imports by cumulative time (``-X importtime``)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", RUN, *args], capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if cumulative.isdigit() and not name.startswith(" ") and "." not in name:
            rows.append((int(cumulative), name))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1e6:.2f} s" for us, name in rows[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"command: python scripts/benchmark_startup.py --repeat {args.repeat}\n")
    print("| command | median wall time | heaviest imports |\n|---|---|---|")
    for command in COMMANDS:
        times = [wall(command) for _ in range(args.repeat)]
        print(f"| a2ls {' '.join(command)} | {statistics.median(times):.2f} s | {heaviest_imports(command)} |")


if __name__ == "__main__":
    main()
