"""``python -m tests.fork_signal_cli ARGS``: the nwb2pennsieve command, signalling itself from inside
its Nth fork (``FORK_SIGNAL_AT=N``; the signal ``FORK_SIGNAL``, SIGTERM by default).

The signal is sent from an at-fork callback of the parent (``os.register_at_fork``), where CPython
runs callbacks that cannot raise: a handler that raised there lost the signal (the run went on,
published and exited 0). With the fork context, fork 1 is the planning child and the next ones
the pool's workers. ``FORK_COUNT_TO`` names a file the number of forks is written to at exit.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path

_at = int(os.environ.get("FORK_SIGNAL_AT", "0"))
_signum = getattr(signal, os.environ.get("FORK_SIGNAL", "SIGTERM"))
_forks = [0]


def _after_fork_in_parent() -> None:
    _forks[0] += 1
    if _forks[0] == _at:
        os.kill(os.getpid(), _signum)


os.register_at_fork(after_in_parent=_after_fork_in_parent)
if "FORK_COUNT_TO" in os.environ:
    atexit.register(lambda: Path(os.environ["FORK_COUNT_TO"]).write_text(str(_forks[0])))

if __name__ == "__main__":
    from nwb2pennsieve.__main__ import main

    sys.exit(main())
