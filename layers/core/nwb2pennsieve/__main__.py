"""The ``nwb2pennsieve`` command's entry point (the console script, ``python -m nwb2pennsieve``).

The stop signals are handled before anything else is loaded: importing the command (numpy, h5py,
pydantic, the planner) takes about half a second, and a Ctrl-C there would otherwise end in a
traceback from inside an import. A signal during start-up is held and raised as soon as the
command's own error handling runs (one line, exit status 128 + the signal). Once the command has
returned, its exit status is decided: the stop signals are ignored while the process shuts down
(multiprocessing joins what it started), so the status is the one the last line explains.
"""

from __future__ import annotations

import sys

from . import signals
from .testing_seams import checkpoint


def main() -> int:
    signals.install(held=True)
    checkpoint("startup")
    from .local.cli import main as command

    try:
        return command()
    finally:
        signals.ignore()


if __name__ == "__main__":
    sys.exit(main())
