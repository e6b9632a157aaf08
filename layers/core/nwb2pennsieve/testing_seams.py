"""Test seams: named points of a conversion where a test can stop, crash or signal the process.

No-ops unless the environment asks, so a test drives the real command line in a subprocess and
acts at a known moment instead of racing it:

- ``NWB2PENNSIEVE_TEST_STOP_AT=<name>``: the process sends itself ``SIGSTOP`` at checkpoint
  ``name`` (once); the test waits for the stop (``waitpid(pid, WUNTRACED)``), changes the world
  (the input file, the server), then sends ``SIGCONT``.
- ``NWB2PENNSIEVE_TEST_CRASH_AT=<name>``: the process dies of ``SIGSEGV`` there, as a decoder
  crashing in C would.
- ``NWB2PENNSIEVE_TEST_SIGNAL_AT=<name>`` (or ``<name>:SIGINT``, ``<name>:SIGHUP``): the process
  sends itself the signal (SIGTERM by default) there, as a user could at that very moment.

Checkpoints: ``startup`` (the command's entry, before the heavy imports), ``planned`` (the parent
has the plan), ``staged`` (the staging folder has just been made), ``reading`` (a worker process is
about to read a work item's data), ``items-done`` (every work item written, before the input is
checked a last time), ``swapped`` (the new output has just been swapped in).

Imports nothing heavy: the command's entry point calls it before anything else is loaded.
"""

from __future__ import annotations

import os
import signal

_STOP = "NWB2PENNSIEVE_TEST_STOP_AT"
_CRASH = "NWB2PENNSIEVE_TEST_CRASH_AT"
SIGNAL_AT = "NWB2PENNSIEVE_TEST_SIGNAL_AT"
_done: set[str] = set()


def checkpoint(name: str) -> None:
    """Stop, crash or signal here when a test asked for it (see the module's doc); else nothing."""
    if os.environ.get(_STOP) == name and name not in _done:
        _done.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
    if os.environ.get(_CRASH) == name:
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    at, _, signame = os.environ.get(SIGNAL_AT, "").partition(":")
    if at == name:
        os.kill(os.getpid(), getattr(signal, signame or "SIGTERM"))
