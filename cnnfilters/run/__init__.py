"""The loop over a run's inputs: plan each input's outputs, run the command on it
(here, on worker processes, or on a Dask cluster), record what it gave.

- :mod:`.settings`: :class:`Settings` (made once) and the run's :class:`Summary`;
- :mod:`.planning`: every input's output files, planned a folder at a time;
- :mod:`.loop`: :func:`run`, the main loop, and the recording of each input;
- :mod:`.steps`: one input's steps (decode, run, check, write);
- :mod:`.pool`: the worker pool and Dask, chunks of inputs, dead workers, a stop;
- :mod:`.signals` and :mod:`.workers`: Ctrl-C and SIGTERM around a pool, and a
  worker's start-up.
"""

from __future__ import annotations

from .loop import run
from .planning import Planned, existing_outputs, plan, plan_outputs
from .settings import Settings, Summary
from .steps import process_source, process_sources

__all__ = [
    "Planned",
    "Settings",
    "Summary",
    "existing_outputs",
    "plan",
    "plan_outputs",
    "process_source",
    "process_sources",
    "run",
]
