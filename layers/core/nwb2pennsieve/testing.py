"""Test seams: named checkpoints where a test can stop the process or have it signal itself.

A race (a signal just as the staging folder appears, just after the swap) is made deterministic
without sleeps: the code calls :func:`checkpoint` at the moment that matters, and a test sets

- ``NWB2PENNSIEVE_TEST_SIGNAL_AT=NAME`` (or ``NAME:SIGINT``, ``NAME:SIGHUP``, ...): at checkpoint
  ``NAME`` the process sends itself the signal (SIGTERM by default), as a user could at that moment;
- ``NWB2PENNSIEVE_TEST_STOP_AT=NAME``: at checkpoint ``NAME`` the process stops itself (SIGSTOP);
  the test changes what it wants, then sends SIGCONT.

Without these variables a checkpoint does nothing. Imports nothing heavy: the command's entry
calls it before anything else is loaded.
"""

from __future__ import annotations

import os
import signal

SIGNAL_AT = "NWB2PENNSIEVE_TEST_SIGNAL_AT"
STOP_AT = "NWB2PENNSIEVE_TEST_STOP_AT"


def checkpoint(name: str) -> None:
    """The process reached ``name``: signal or stop itself when a test asked for it."""
    wanted = os.environ.get(SIGNAL_AT)
    if wanted:
        at, _, signame = wanted.partition(":")
        if at == name:
            os.kill(os.getpid(), getattr(signal, signame or "SIGTERM"))
    if os.environ.get(STOP_AT) == name:
        os.kill(os.getpid(), signal.SIGSTOP)
