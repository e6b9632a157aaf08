"""The nwb2pennsieve command: convert, plan, inspect, run (what make run does) and import.

Exit status 0 on success, 1 when the input or the conversion fails, 2 on a usage error. On failure
the last line on stderr is one sentence naming the file, the series and what is wrong; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from .. import __version__, signals
from ..errors import ConfigurationError, Interrupted, NothingToConvertError, Nwb2PennsieveError
from ..output.storage import LocalStore
from ..plan.models import Plan, bundle_only_notes
from ..plan.survey import NOT_SELECTED
from ..settings import Settings
from ..source.http import NetworkPolicy
from ..source.inputs import InputSource
from ..source.nwb import damage_reason
from .cli_options import RUN_EPILOG, add_conversion_options
from .convert import ConversionResult, convert_file
from .planning import plan_file
from .pool import Progress, quiet_warnings

log = logging.getLogger("nwb2pennsieve")

DESCRIPTION = "Convert NWB files into Pennsieve time-series files (convert, plan, run) and import them (import)."


def sample_path() -> Path:
    """The small NWB file bundled with the package (two series, a gap, int16 with scaling)."""
    return Path(str(resources.files("nwb2pennsieve") / "sample" / "sample.nwb"))


def _progress_bar(total: int, label: str) -> tuple[Progress | None, Callable[[], None]]:
    if not sys.stderr.isatty():
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    # No monitor thread: the pool forks its workers only from a single-threaded process (local.pool_context).
    tqdm.monitor_interval = 0
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, file=sys.stderr)

    def update(nbytes: int) -> None:
        # float64 bytes, the unit of ``total``, whatever the gzip level or the formats
        bar.update(nbytes)
        if bar.n >= total:
            bar.refresh()  # drawn at 100 % before it is cleared (tqdm skips updates within 0.1 s)

    return update, bar.close


def _plan(file: str | InputSource, settings: Settings) -> Plan:
    """The file's plan with the settings' conversion options (``convert`` and ``plan`` alike)."""
    return plan_file(file, settings.conversion_options(), timeout_s=settings.plan_timeout_s)


def _source(file: str | os.PathLike[str] | InputSource, settings: Settings) -> InputSource:
    """The input, with the settings' network timeouts and retry budget (for a URL)."""
    policy = NetworkPolicy(read_timeout_s=settings.network_timeout_s, budget_s=settings.network_budget_s)
    return InputSource.parse(file).model_copy(update={"network": policy})


def _convert_one(
    path: str | Path | InputSource, output: Path, settings: Settings, published: list[Path]
) -> ConversionResult:
    source = _source(path, settings)
    plan = _plan(source, settings)
    _report(plan)
    update, close = _progress_bar(sum(i.output_bytes for i in plan.work_items), source.stem)
    try:
        result = convert_file(
            source, output, plan, workers=settings.workers, progress=update, stall_s=settings.read_stall_s
        )
    finally:
        close()
    # From the swap on, stop signals are held (output/publish.py): what OUT holds is said first.
    published.append(result.output_dir)
    for warning in result.warnings:
        print(f"warning: {plan.source}: {warning}", file=sys.stderr)
    for line in result.notes:
        print(line, file=sys.stderr)
    print(result.summary_line())
    signals.release()
    return result


def _report(plan: Plan) -> None:
    for skipped in plan.skipped:
        if skipped.reason == NOT_SELECTED:  # asked for: not news
            continue
        line = f"skipped {skipped.path}: {skipped.reason}"
        if line not in plan.warnings:  # invalid series skipped on request are warnings, below
            print(f"{plan.source}: {line}", file=sys.stderr)
    for warning in plan.warnings:
        print(f"warning: {plan.source}: {warning}", file=sys.stderr)
    for other in plan.not_converted:
        print(other.note(plan.source), file=sys.stderr)
    if plan.writes_chunks:  # what the chunk files leave to the bundle
        for line in bundle_only_notes(plan):
            print(line, file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> int:
    _convert_one(args.file, Path(args.output), args.settings, args.published)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    plan = _plan(_source(args.file, settings), settings)
    if args.full:
        print(plan.model_dump_json(indent=2))
        return 0
    # json.dumps of the plain dump, so the text is what it always was (ASCII-escaped, float repr).
    print(json.dumps(plan.summary().model_dump(), indent=2))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """What the file holds and what its conversion writes; exit 0 also when nothing converts."""
    from .inspect import inspect_file, render

    settings: Settings = args.settings
    found = inspect_file(_source(args.file, settings), settings.conversion_options())
    print(found.model_dump_json(indent=2) if args.json else render(found))
    return 0


DEFAULT_INPUT_DIR = Settings.model_fields["input_dir"].default


def _inputs(input_dir: Path) -> list[Path] | None:
    """The ``*.nwb`` files (any case) in ``input_dir``; None when it is not a folder."""
    if not input_dir.is_dir():
        return None
    return sorted(p for p in input_dir.iterdir() if p.suffix.lower() == ".nwb" and p.is_file())


def cmd_run(args: argparse.Namespace) -> int:
    """Convert every ``*.nwb`` in INPUT_DIR into OUTPUT_DIR/<file stem>/; end with a tally."""
    settings: Settings = args.settings
    inputs = _inputs(settings.input_dir)
    if not inputs:
        if settings.input_dir != DEFAULT_INPUT_DIR:
            what = "holds no .nwb file" if inputs is not None else "is not a folder"
            if not settings.input_dir.exists():
                what = "does not exist"
            raise ConfigurationError(f"INPUT_DIR {settings.input_dir} {what}")
        inputs = [sample_path()]
        print(
            f"no .nwb file in {settings.input_dir}: converting the bundled sample {inputs[0].name}"
            f" into {settings.output_dir / inputs[0].stem}",
            file=sys.stderr,
        )
    # With the importer on, fail before any conversion work when credentials or targets are missing.
    from ..pennsieve import import_output, input_targets

    targets = input_targets(settings, [p.stem for p in inputs], args.target or ())
    converted = skipped = growing = 0
    failures: list[str] = []
    written_now = _still_written(inputs, settings.settle_s)
    for path in inputs:
        change = written_now.get(path)
        if change is not None:  # a copy still being written: its next run converts it whole
            growing += 1
            print(
                f"note: {path.name}: skipped: it is still being written ({change}); run again when it is complete",
                file=sys.stderr,
            )
            continue
        try:
            result = _convert_one(path, settings.output_dir / path.stem, settings, args.published)
            if targets is not None:
                imported = import_output(LocalStore(result.output_dir), settings, targets[path.stem], source=path.stem)
                print(f"{path.name}: {imported.summary_line()}")
            converted += 1
        except NothingToConvertError as exc:  # not a failure: the file holds nothing this tool converts
            skipped += 1
            print(f"note: {path.name}: skipped: {exc.reason}", file=sys.stderr)
        except Exception as exc:
            if args.debug:
                raise
            failures.append(describe_error(exc, path.name))
            print(f"error: {failures[-1]}", file=sys.stderr)
    return _tally(converted, skipped, failures, growing)


def _still_written(paths: list[Path], settle_s: float) -> dict[Path, str]:
    """The files modified in the last ``settle_s`` seconds that changed again over that long, and
    how (all watched at once). A copy into INPUT_DIR still running would otherwise be converted
    half-written."""
    first = {}
    for path in paths:
        with contextlib.suppress(OSError):  # converting it says what is wrong
            info = path.stat()
            if settle_s > 0 and time.time() - info.st_mtime <= settle_s:
                first[path] = info
    if not first:
        return {}
    time.sleep(settle_s)
    changed = {}
    for path, before in first.items():
        with contextlib.suppress(OSError):
            now = path.stat()
            if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                changed[path] = f"its size went from {before.st_size:,} to {now.st_size:,} bytes in {settle_s:g} s"
    return changed


def _tally(converted: int, skipped: int, failures: list[str], growing: int = 0) -> int:
    """``2 converted, 1 skipped, 1 failed:`` then each failure on a line of its own; exit 1 on a failure."""
    counts = [f"{converted} converted"] + ([f"{skipped} skipped (nothing to convert)"] if skipped else [])
    counts += [f"{growing} skipped (still being written)"] if growing else []
    if not failures:
        print(", ".join(counts))
        return 0
    lines = [", ".join([*counts, f"{len(failures)} failed:"]), *(f"  {failure}" for failure in failures)]
    print("\n".join(lines), file=sys.stderr)
    return 1


# The commands that read Settings, and their options that set a field of it (same name).
_SETTINGS_COMMANDS = ("convert", "plan", "inspect", "run")
_SETTING_OPTIONS = tuple(Settings.options)


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with this command's options laid over them."""
    return Settings.from_env(**{name: getattr(args, name, None) for name in _SETTING_OPTIONS})


# Commands that never import into Pennsieve: for them the importer's modules (boto3, requests:
# start-up time and memory, inherited by every forked worker) are not loaded at all.
_LOCAL_COMMANDS = ("convert", "plan", "inspect")


def _needs_importer(argv: Sequence[str] | None) -> bool:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    return command not in _LOCAL_COMMANDS


_FILE_HELP = (
    "the .nwb file: a path, an http(s):// URL (e.g. a DANDI asset URL) or s3://bucket/key, "
    "read in place with ranged requests"
)


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """Options every subcommand takes after its name too (``nwb2pennsieve run --debug``)."""
    # SUPPRESS: not given after the subcommand leaves the main parser's value alone.
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug logs")


def build_parser(*, with_import: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nwb2pennsieve", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert one NWB file into a directory of chunk files")
    p.add_argument("file", help=_FILE_HELP)
    p.add_argument("--output", "-o", required=True, help="output directory")
    p.add_argument("--workers", default=None, help="worker processes (env WORKERS; default: CPUs)")
    add_conversion_options(p)
    p.set_defaults(handler=cmd_convert)

    p = sub.add_parser("plan", help="print the conversion plan of an NWB file as JSON")
    p.add_argument("file", help=_FILE_HELP)
    p.add_argument(
        "--full",
        action="store_true",
        help="the whole plan, as plan.json holds it (every work item; each series' chunks as their rule)",
    )
    add_conversion_options(p)
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser(
        "inspect", help="what an NWB file holds, what will not be converted and why, and what the conversion writes"
    )
    p.add_argument("file", help=_FILE_HELP)
    p.add_argument("--json", action="store_true", help="print the inspection as JSON (for scripts)")
    add_conversion_options(p)
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser(
        "run",
        help="convert INPUT_DIR/*.nwb into OUTPUT_DIR (what make run does)",
        description="Convert every INPUT_DIR/*.nwb (any case) into OUTPUT_DIR/<file stem>/, then import"
        " each output when IMPORTER_ENABLED; end with a tally.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target_help = "import the input file STEM.nwb into this package (repeatable; wins over PACKAGE_MAP)"
    p.add_argument("--target", action="append", default=None, metavar="STEM=PACKAGE", help=target_help)
    p.set_defaults(handler=cmd_run)

    if with_import:
        from ..pennsieve import add_import_command

        add_import_command(sub)
    for command in sub.choices.values():
        _add_common_options(command)
    return parser


def _quiet_broken_pipe() -> int:
    """``nwb2pennsieve plan ... | head``: the reader left; end quietly, as a killed writer would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # Python's exit flush would hit the pipe again
    return 128 + 13  # SIGPIPE


def _check_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Refuse an option no command has before argparse does (it would first complain of a missing
    required one, or take a typo for something else), naming the closest one: ``unknown option
    --ouput (did you mean --output?)``, exit 2. Unique prefixes (``--out``) stay accepted."""
    commands = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    name = next((a for a in argv if not a.startswith("-")), None)
    if commands is None or name not in commands.choices:
        return
    command: argparse.ArgumentParser = commands.choices[name]
    known = [s for p in (parser, command) for a in p._actions for s in a.option_strings if s.startswith("--")]
    for arg in argv[list(argv).index(name) + 1 :]:
        if arg == "--":
            return
        option = arg.split("=", 1)[0]
        if not option.startswith("--") or any(k.startswith(option) for k in known):
            continue
        close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        command.error(f"unknown option {option}" + (f" (did you mean {close[0]}?)" if close else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """The command: exit status 0, 1 (the input or the conversion failed), 2 (a usage error or a
    bad setting), 128 + the signal when Ctrl-C, SIGTERM or SIGHUP stopped it (:mod:`..signals`)."""
    restore = None if signals.installed() else signals.install()  # the entry point installs them first
    try:
        return _main(argv)
    finally:
        if restore is not None:
            restore()


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace | None = None
    try:
        try:
            signals.release()  # a signal held while the command started is raised here
            args = _arguments(argv)
            # A bad setting names itself (variable and option), not a file: "error: <reason>", exit 2.
            args.settings = _settings(args) if args.command in _SETTINGS_COMMANDS else None
            return int(args.handler(args))
        except KeyboardInterrupt:
            raise
        except BrokenPipeError:
            return _quiet_broken_pipe()
        except Exception as exc:
            if args is not None and args.debug:
                raise
            return _failed(exc, args)
    except KeyboardInterrupt as exc:  # also one raised while a failure was being reported
        return _interrupted(exc, args)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed command line (argparse exits with status 2 on a usage error), logging set up."""
    parser = build_parser(with_import=_needs_importer(argv))
    given = list(sys.argv[1:] if argv is None else argv)
    _check_options(parser, given)
    args = parser.parse_args(given)
    args.published = []  # the outputs this command has published, for the interruption message
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(message)s" if args.debug else "%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("h5py").setLevel(logging.WARNING)
    if not args.debug:
        quiet_warnings()
    log.debug("nwb2pennsieve %s %s, pid %d", __version__, args.command, os.getpid())
    return args


def _failed(exc: Exception, args: argparse.Namespace | None) -> int:
    if isinstance(exc, ConfigurationError):  # a setting names itself (a selection names its file too)
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    source = _source_name(getattr(args, "file", "") or "nwb2pennsieve")
    print(f"error: {describe_error(exc, source)}", file=sys.stderr)
    return 1


def _interrupted(exc: KeyboardInterrupt, args: argparse.Namespace | None) -> int:
    """One line saying what the outputs hold. The workers are killed and the staging folder
    removed on the way out (local/pool.py, output/publish.py). A ``convert`` whose output was
    published before the signal is complete: exit status 0."""
    signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
    how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    published: list[Path] = getattr(args, "published", [])
    if not published:
        print(f"error: interrupted ({how}): workers stopped, nothing published", file=sys.stderr)
    elif args is not None and args.command == "convert":
        print(f"note: interrupted ({how}) after {published[0]} was published: it is complete", file=sys.stderr)
        return 0
    else:
        shown = ", ".join(str(p) for p in published)
        print(f"error: interrupted ({how}): published {shown}; nothing else", file=sys.stderr)
    return 128 + signum


def _source_name(file: str) -> str:
    try:
        return InputSource.parse(file).name
    except Exception:
        return file


def describe_error(exc: BaseException, source: str) -> str:
    """One line for any error: ours carry file/series/reason; others get the file name."""
    if isinstance(exc, Nwb2PennsieveError):
        return exc.with_file(source).one_line()
    if isinstance(exc, OSError) and exc.strerror:  # the system's reason, and the path it concerns
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{source}: {where}{exc.strerror}"
    if isinstance(exc, MemoryError):
        return f"{source}: out of memory (a damaged file may declare an absurd size)"
    if isinstance(exc, KeyError | RuntimeError | ValueError | TypeError) and _HDF5_TEXT.search(str(exc)):
        return f"{source}: {damage_reason(exc)}"  # h5py's error, in words: never HDF5's own text
    return f"{source}: an unexpected {type(exc).__name__}; run again with --debug for the details, and report it"


_HDF5_TEXT = re.compile(r"Unable to|synchronously|H5[A-Z]|HDF5|B-tree|object header|\(truncated\)")


if __name__ == "__main__":
    sys.exit(main())
