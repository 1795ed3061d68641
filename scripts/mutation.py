"""Mutation testing of the core: does the suite notice each small change to the code?

Runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) on the
modules whose mistakes would give a wrong answer or lose a file: the engine,
rounding, the references, the constructions (ops), the damage checks
(integrity) and the clobber rule (clobber). mutmut makes every mutant of
those modules (an operator, a constant, a comparison changed), runs the tests
that reach the function it is in, and records whether one failed.

Prints the tally (mutants, killed, survived, timeouts, minutes) and each
survivor, marked as known when ``docs/TESTING.md`` lists it as equivalent
(with the reason it cannot change a result), and writes them to
``OUT/mutation.json``. Exits 1 when a survivor is not listed there: either a
test is missing or the docs are.

Usage, in a virtual environment where cnnfilters is installed as a copy (not
``pip install -e``: an editable install would be imported instead of the
mutated copy)::

    pip install ".[test,mutation]"
    python scripts/mutation.py [--out bench-out] [--jobs 2]

Run from the checkout's root; mutmut works in ``mutants/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "TESTING.md"


def known_equivalent() -> set[str]:
    """The mutants ``docs/TESTING.md`` lists as equivalent (by mutmut's name)."""
    if not DOCS.exists():
        return set()
    return set(re.findall(r"`(cnnfilters\.[\w.]+__mutmut_\d+)`", DOCS.read_text()))


def results() -> dict[str, str]:
    """Every mutant's status, from mutmut's records."""
    command = ["mutmut", "results", "--all", "true"]
    done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True, check=True)
    found = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def diff_of(name: str) -> str:
    shown = subprocess.run(["mutmut", "show", name], cwd=ROOT, text=True, capture_output=True)
    return shown.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-out")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--fresh", action="store_true", help="Remove mutmut's earlier results.")
    args = parser.parse_args()
    if shutil.which("mutmut") is None:
        print("mutmut is not installed: pip install '.[mutation]'", file=sys.stderr)
        return 2
    if args.fresh:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    # The property tests derandomized and with fewer examples (tests/conftest.py);
    # subprocesses of the tests import the mutated copy too (mutmut tells them
    # which mutant through the environment).
    env = {
        **os.environ,
        "CI": "true",
        "PYTHONPATH": str(ROOT / "mutants"),
        "HYPOTHESIS_PROFILE": "mutation",
    }
    started = time.perf_counter()
    for _ in range(3):
        # A first run in a fresh mutants/ can find no test for any mutant (mutmut
        # 3.8 reads the call statistics it has just collected only on its next
        # run): the next run then tests them.
        command = ["mutmut", "run", "--max-children", str(args.jobs)]
        done = subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)
        if "Stopping early" not in done.stdout + done.stderr:
            break
    minutes = (time.perf_counter() - started) / 60
    statuses = results()
    tally: dict[str, int] = {}
    for status in statuses.values():
        tally[status] = tally.get(status, 0) + 1
    known = known_equivalent()
    survivors = sorted(name for name, status in statuses.items() if status == "survived")
    new = [name for name in survivors if name not in known]
    report = {
        "mutants": len(statuses),
        "by_status": dict(sorted(tally.items())),
        "minutes": round(minutes, 1),
        "survivors": [{"name": n, "known": n in known, "diff": diff_of(n)} for n in survivors],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mutation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(statuses)} mutants in {minutes:.1f} min: {json.dumps(report['by_status'])}")
    for item in report["survivors"]:
        print(f"\n{'known' if item['known'] else 'NEW'}: {item['diff']}")
    print(f"\n{len(survivors)} survived, {len(new)} not listed in docs/TESTING.md")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
