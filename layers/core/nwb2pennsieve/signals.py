"""Stop signals (Ctrl-C, SIGTERM, SIGHUP) become :class:`~nwb2pennsieve.errors.Interrupted`, raised
only where stopping is safe.

Python runs a signal handler between any two bytecodes of the main thread, so an exception raised
by a handler can land where it does harm: inside an at-fork callback (CPython prints "Exception
ignored" and drops it: the run goes on and publishes), between creating the staging folder and
recording it, between forking a pool worker and the pool recording it (the worker is never killed,
and the exit waits for it for ever), between swapping an output in and recording that it is
published. Code that must not be cut there runs in a :func:`deferred` section: a signal that
arrives inside one is recorded, and raised when the outermost section is left. Elsewhere the
handler raises at once.

The command also *holds* signals while it starts (importing numpy, h5py and the planner takes half
a second: a Ctrl-C there would end in a traceback from inside an import) and from the moment an
output is published until the command has said so: a signal held is raised by :func:`release`.

The first signal is the one acted on; later ones are ignored, so the cleanup it starts runs
undisturbed. Children started by the pool ignore these signals (:func:`ignore`): the
parent alone decides, and kills them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import Interrupted

# Ctrl-C, and what timeout, docker stop, systemd and a closing terminal send.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _State:
    received: int | None = None  # the first stop signal
    raised = False  # it has been raised as Interrupted
    depth = 0  # deferred sections the main thread is in
    held = False  # held until release()


_state = _State()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.received is not None:  # a later signal: the first one's cleanup runs undisturbed
        return
    _state.received = signum
    check()  # at once, unless held or in a deferred section


def install(*, held: bool = False) -> Callable[[], None]:
    """Handle the stop signals from now on (in the main thread; elsewhere nothing changes), held
    until :func:`release` when ``held``; returns the function that puts the previous handlers back."""
    if not _main_thread():
        return lambda: None
    _state.received, _state.raised, _state.depth, _state.held = None, False, 0, held
    previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _state.received, _state.raised, _state.depth, _state.held = None, False, 0, False

    return restore


def installed() -> bool:
    return _main_thread() and signal.getsignal(signal.SIGINT) is _handle


def received() -> int | None:
    """The stop signal received, if any (raised or not)."""
    return _state.received


def check() -> None:
    """Raise the stop signal received and not raised yet (not held, outside a deferred section, in
    the main thread)."""
    if _state.received is None or _state.raised or _state.held or _state.depth or not _main_thread():
        return
    _state.raised = True
    raise Interrupted(_state.received)


def hold() -> None:
    """From now on a stop signal is only recorded, until :func:`release` (an output was just
    published: what follows is the command saying so, not work a signal should cut)."""
    if _main_thread():
        _state.held = True


def release() -> None:
    """End :func:`hold`: raise the signal received meanwhile, if any."""
    if _main_thread():
        _state.held = False
        check()


@contextmanager
def deferred() -> Iterator[None]:
    """A section no stop signal cuts: one arriving inside is raised when the outermost section is
    left without an error (with one, the error goes on and the signal is not raised).

    Another thread's sections are its own business: signals are handled by the main thread only.
    """
    if not _main_thread():
        yield
        return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
    check()


def ignore() -> None:
    """Ignore the stop signals from now on: in a child process (a pool worker, the planning child:
    the parent decides, and kills it; a terminal sends Ctrl-C and SIGHUP to the whole process
    group), and in the command once it has returned (its exit status is decided; Python would put
    the default handlers back while it shuts down, and a late SIGTERM would then kill it)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
