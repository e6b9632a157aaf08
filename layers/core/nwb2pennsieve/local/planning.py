"""Planning a local file, URL or S3 object for the local pool: in a child process given
``PLAN_TIMEOUT_S`` (a damaged file can send HDF5 into an endless loop inside one call, which no
Python code can interrupt), or in this process.

The child dies with the command, even by ``kill -9`` (``PR_SET_PDEATHSIG``, as the pool's
workers), and ignores the stop signals: the command decides, and kills it.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

from .. import signals
from ..errors import InvalidInputError
from ..options import ConversionOptions
from ..plan.events import FoundFile
from ..plan.models import Plan
from ..plan.survey import build_plan
from ..source.annotation_files import files_beside
from ..source.identity import SourceIdentity, check_same, stat_identity
from ..source.inputs import InputSource, open_input, raise_network_failure
from .pool import die_with_parent, pool_context


def plan_file(
    path: str | os.PathLike[str] | InputSource, options: ConversionOptions, *, timeout_s: float | None = None
) -> Plan:
    """Plan a local file, URL or S3 object (see :class:`~nwb2pennsieve.source.inputs.InputSource`); with
    ``timeout_s``, in a child process given that long (PLAN_TIMEOUT_S).

    A damaged file can send HDF5 into an endless loop inside one call, which no Python code can
    interrupt: the child is killed and one line names the file.
    """
    source = InputSource.parse(path)
    before = _named_now(source)
    # timeout_s None or 0: in this process, without a limit
    plan = _plan_in_child(source, options, timeout_s) if timeout_s else _plan_here(source, options)
    if before is not None and plan.source_identity is not None:
        # The file planned is the one the name named when planning began (not one renamed over it since).
        check_same(before, plan.source_identity, source.name)
    return plan


def _named_now(source: InputSource) -> SourceIdentity | None:
    """The identity of the local file the input names now (None: a URL, or no file to stat: opening
    it says why)."""
    if source.kind != "file":
        return None
    try:
        return stat_identity(os.stat(source.location))
    except OSError:
        return None


def _plan_here(source: InputSource, options: ConversionOptions) -> Plan:
    """The plan, with the version of the input it was made from (``Plan.source_identity``)."""
    files = annotation_files(source) if options.tszarr else []
    with open_input(source) as opened:
        try:
            plan = build_plan(opened.h5, source=opened.source.name, options=options, annotation_files=files)
        except Exception:
            raise_network_failure(opened.reader)
            raise
        identity = opened.identity
    warnings = list(plan.warnings)
    if source.kind == "http" and not identity.etag and not identity.last_modified:
        warnings.append(
            "the server sends neither a (strong) ETag nor Last-Modified: a change of the file during the "
            "conversion can be seen only by its size"
        )
    return plan.model_copy(update={"source_identity": identity, "warnings": warnings})


def annotation_files(source: InputSource) -> list[FoundFile]:
    """The annotation files beside a local input (``<stem>...annotations.ndjson``); a URL has none."""
    if source.kind != "file":
        return []
    out = []
    for path in files_beside(source.location):
        try:
            out.append(FoundFile(name=path.name, location=str(path), data=path.read_bytes()))
        except OSError as exc:
            raise InvalidInputError(
                f"annotation file {path.name} cannot be read ({exc.strerror or exc})", file=source.name
            ) from None
    return out


def _plan_child(
    conn: Connection, source: InputSource, options: ConversionOptions, env: dict[str, str], parent_pid: int
) -> None:
    signals.ignore()
    die_with_parent(parent_pid)
    # A forkserver child has the environment the server started with: take the caller's.
    os.environ.clear()
    os.environ.update(env)
    try:
        message: tuple[str, object] = ("plan", _plan_here(source, options).model_dump_json())
    except BaseException as exc:  # sent to the parent, which raises it
        message = ("error", exc)
    try:
        conn.send(message)
    except Exception as exc:  # an exception that does not pickle
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {message[1]}")))
    conn.close()


def _plan_in_child(source: InputSource, options: ConversionOptions, timeout_s: float) -> Plan:
    name = source.name
    context = pool_context()
    receive, send = context.Pipe(duplex=False)
    args = (send, source, options, dict(os.environ), os.getpid())
    child = context.Process(target=_plan_child, args=args, daemon=True)  # type: ignore[attr-defined]
    try:
        with signals.deferred():  # a signal cutting the fork would be lost (raised in an at-fork callback)
            child.start()
            send.close()
        if not receive.poll(timeout_s):
            raise InvalidInputError(
                f"planning took longer than {timeout_s:g} s (PLAN_TIMEOUT_S) and was stopped: HDF5 may be "
                "looping in a damaged part of the file (raise PLAN_TIMEOUT_S for a file that is just big)",
                file=name,
            )
        try:
            kind, body = receive.recv()
        except (EOFError, OSError):
            child.join()
            code = child.exitcode or 0
            how = f"was killed by signal {-code}" if code < 0 else f"ended with exit status {code}"
            raise InvalidInputError(f"planning {how} (HDF5 crashed): the file is damaged", file=name) from None
    finally:
        with signals.deferred():  # never a child left alive: it ignores SIGTERM, the exit would wait for it
            receive.close()
            if child.is_alive():
                child.kill()
            if child.pid is not None:
                child.join()
    if kind == "error":
        assert isinstance(body, BaseException)
        raise body
    assert isinstance(body, str)
    return Plan.model_validate_json(body)
