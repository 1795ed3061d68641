"""Mutation testing of the core: does the suite notice each small change to the code?

Runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) on the
modules whose mistakes would give a wrong answer or lose a file: the engine,
rounding, the references, the constructions (ops), the damage checks
(integrity) and the clobber rule (clobber). mutmut makes every mutant of
those modules (an operator, a constant, a comparison changed), runs the tests
that reach the function it is in, and records whether one failed.

Prints the tally (mutants, killed, survived, timeouts, minutes) and each
survivor, marked as known when ``docs/MUTANTS.md`` lists it as equivalent
under the reason it cannot change a result (or its diff is of a class below),
and writes them to ``OUT/mutation.json``. Exits 1 when a survivor is neither:
either a test is missing or the docs are.

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
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "MUTANTS.md"
_NAME = re.compile(r"`(cnnfilters\.[\w.ǁ]+__mutmut_\d+)`")


def known_equivalent() -> dict[str, str]:
    """The mutants ``docs/MUTANTS.md`` lists as equivalent (by mutmut's name), each
    with the heading it is listed under: the reason it cannot change a result."""
    if not DOCS.exists():
        return {}
    reasons, heading = {}, ""
    for line in DOCS.read_text().splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
        for name in _NAME.findall(line):
            reasons[name] = heading
    return reasons


# Changes no input can tell apart, recognised in a mutant's diff: (name, the changed
# line before and after made equal by this substitution, why it changes no result).
EQUIVALENT_CLASSES = [
    (
        "zip strict",
        (r",?\s*strict=(True|False|None)", ""),
        "zip's sequences have equal lengths by construction (a pair of heights and "
        "widths, one value a kernel axis): strict only guards against a bug that would "
        "raise",
    ),
    (
        "astype copy",
        (r",?\s*copy=(True|False|None)", ""),
        "whether astype copies an array that nothing writes to: memory, not values",
    ),
    (
        "ufunc out",
        (r",?\s*out=(result|None)", ""),
        "a ufunc's out=: its result is assigned to the same name either way",
    ),
    (
        "reshape negative",
        (r"reshape\(-\d+", "reshape(-1"),
        "numpy takes any negative size in reshape as the one it works out",
    ),
    (
        "astype None",
        (r"astype\(np\.float64", "astype(None"),
        "numpy reads astype(None) as astype(float64): the same type",
    ),
    (
        "einsum case",
        (r'einsum\("([a-zA-Z,>-]+)"', lambda m: 'einsum("' + m.group(1).lower() + '"'),
        "einsum's subscripts in upper case name the same axes",
    ),
]


def equivalent_class(diff: str) -> str | None:
    """The class of a mutant that cannot change a result, from its diff, or None."""
    before = [line[2:] for line in diff.splitlines() if line.startswith("- ")]
    after = [line[2:] for line in diff.splitlines() if line.startswith("+ ")]
    if not before or len(before) != len(after):
        return None

    def plain(line: str, pattern: str, replacement: object) -> str:
        # Without the substitution's token, spaces and a trailing comma left behind.
        return re.sub(pattern, replacement, line).replace(" ", "").replace(",)", ")")

    for name, (pattern, replacement), _ in EQUIVALENT_CLASSES:
        same = [plain(line, pattern, replacement) for line in before]
        if same == [plain(line, pattern, replacement) for line in after]:
            return name
    return None


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
        # A first run in a fresh mutants/ can end having tested no mutant (mutmut
        # 3.8 reads the call statistics it has just collected only on its next
        # run, and then says "Stopping early", or nothing): the next run tests them.
        command = ["mutmut", "run", "--max-children", str(args.jobs)]
        subprocess.run(command, cwd=ROOT, env=env, text=True, capture_output=True)
        statuses = results()
        if "not checked" not in statuses.values():
            break
    minutes = (time.perf_counter() - started) / 60
    tally = Counter(statuses.values())
    known = known_equivalent()
    survivors = sorted(name for name, status in statuses.items() if status == "survived")
    diffs = {name: diff_of(name) for name in survivors}
    classes = {name: equivalent_class(diffs[name]) for name in survivors}
    new = [name for name in survivors if name not in known and classes[name] is None]
    report = {
        "mutants": len(statuses),
        "by_status": dict(sorted(tally.items())),
        "minutes": round(minutes, 1),
        "equivalent_by_class": dict(
            sorted(Counter(c for c in classes.values() if c is not None).items())
        ),
        "survivors": [
            {"name": n, "reason": known.get(n), "class": classes[n], "diff": diffs[n]}
            for n in survivors
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mutation.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(statuses)} mutants in {minutes:.1f} min: {json.dumps(report['by_status'])}")
    for item in report["survivors"]:
        if item["class"] is None and item["reason"] is None:
            print(f"\nNEW: {item['diff']}")
    listed = sum(1 for n in survivors if classes[n] is None and n in known)
    print(f"\nequivalent by class: {json.dumps(report['equivalent_by_class'])}")
    print(f"equivalent, listed in docs/MUTANTS.md: {listed}")
    print(f"{len(survivors)} survived, {len(new)} neither of a class nor listed")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
