"""The ``nwb2pennsieve`` command: convert, plan, run (what ``make run`` does) and import.

Exit status 0 on success, 1 when the input or the conversion fails, 2 on a usage error. On failure
the last line on stderr is one sentence naming the file, the series and what is wrong; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from . import __version__
from .config import DEFAULT_CHUNK_SIZE_MB, DEFAULT_MAX_ITEM_MB, Settings
from .errors import ConfigurationError
from .local import ConversionResult, Progress, convert_file, describe_error, plan_file
from .models import Plan
from .storage import LocalStore

log = logging.getLogger("nwb2pennsieve")


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
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False, file=sys.stderr)
    return bar.update, bar.close


def _convert_one(path: Path, output: Path, settings: Settings) -> ConversionResult:
    plan = plan_file(
        path,
        chunk_size_mb=settings.chunk_size_mb,
        max_item_mb=settings.max_item_mb,
        skip_invalid_series=settings.skip_invalid_series,
        output_formats=settings.output_formats,
        bundle_zstd_level=settings.bundle_zstd_level,
    )
    _report(plan)
    update, close = _progress_bar(sum(i.output_bytes for i in plan.work_items), path.name)
    try:
        result = convert_file(path, output, plan=plan, workers=settings.workers, progress=update)
    finally:
        close()
    print(result.summary_line())
    return result


def _report(plan: Plan) -> None:
    for skipped in plan.skipped:
        line = f"skipped {skipped.path}: {skipped.reason}"
        if line not in plan.warnings:  # invalid series skipped on request are warnings, below
            print(f"{plan.source}: {line}", file=sys.stderr)
    for warning in plan.warnings:
        print(f"warning: {plan.source}: {warning}", file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> int:
    _convert_one(Path(args.file), Path(args.output), args.settings)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    plan = plan_file(
        args.file,
        chunk_size_mb=settings.chunk_size_mb,
        max_item_mb=settings.max_item_mb,
        skip_invalid_series=settings.skip_invalid_series,
        output_formats=settings.output_formats,
        bundle_zstd_level=settings.bundle_zstd_level,
    )
    if args.full:
        print(plan.model_dump_json(indent=2))
        return 0
    # json.dumps of the plain dump, so the text is what it always was (ASCII-escaped, float repr).
    print(json.dumps(plan.summary().model_dump(), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Convert every ``*.nwb`` in INPUT_DIR into OUTPUT_DIR/<file stem>/ (the bundled sample if none)."""
    settings: Settings = args.settings
    # With the importer on, fail before any conversion work when credentials or a target are missing.
    from .pennsieve import import_output, import_preflight

    target = import_preflight(settings)
    inputs = sorted(settings.input_dir.glob("*.nwb")) if settings.input_dir.is_dir() else []
    if not inputs:
        inputs = [sample_path()]
        print(
            f"no .nwb file in {settings.input_dir}: converting the bundled sample {inputs[0].name}",
            file=sys.stderr,
        )
    failures = 0
    for path in inputs:
        try:
            result = _convert_one(path, settings.output_dir / path.stem, settings)
            if target is not None:
                imported = import_output(LocalStore(result.output_dir), settings, target)
                print(f"{path.name}: {imported.summary_line()}")
        except Exception as exc:
            if args.debug:
                raise
            failures += 1
            print(f"error: {describe_error(exc, path.name)}", file=sys.stderr)
    return 1 if failures else 0


def _add_conversion_options(p: argparse.ArgumentParser) -> None:
    # Flags are kept as given (None: not given) and validated with the environment by
    # Settings.from_env when the command runs: one parser, one message form, exit status 2.
    p.add_argument(
        "--chunk-size-mb",
        default=None,
        help=f"MiB of float64 per channel per chunk file (env CHUNK_SIZE_MB; default {DEFAULT_CHUNK_SIZE_MB})",
    )
    p.add_argument(
        "--max-item-mb",
        default=None,
        help=f"float64 MiB one work item writes at most (env MAX_ITEM_MB; default {DEFAULT_MAX_ITEM_MB}, "
        "sized for a 2 GB Lambda)",
    )
    p.add_argument(
        "--formats",
        dest="output_formats",
        default=None,
        help="what to write: chunks (the chunk files, default), bundle (Pennsieve's viewer bundle, "
        "<stem>.zarr) or chunks,bundle (env OUTPUT_FORMATS)",
    )
    p.add_argument(
        "--skip-invalid-series",
        action="store_true",
        default=None,
        help="convert the valid series and report the invalid ones (env SKIP_INVALID_SERIES=true)",
    )


# The commands that read Settings, and their options that set a field of it (same name).
_SETTINGS_COMMANDS = ("convert", "plan", "run")
_SETTING_OPTIONS = tuple(Settings.options)


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with this command's options laid over them."""
    return Settings.from_env(**{name: getattr(args, name, None) for name in _SETTING_OPTIONS})


# Commands that never import into Pennsieve: for them the importer's modules (boto3, requests:
# start-up time and memory, inherited by every forked worker) are not loaded at all.
_LOCAL_COMMANDS = ("convert", "plan")


def _needs_importer(argv: Sequence[str] | None) -> bool:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    return command not in _LOCAL_COMMANDS


def build_parser(*, with_import: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nwb2pennsieve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert one NWB file into a directory of chunk files")
    p.add_argument("file", help="the .nwb file")
    p.add_argument("--output", "-o", required=True, help="output directory")
    p.add_argument("--workers", default=None, help="worker processes (env WORKERS; default: CPUs)")
    _add_conversion_options(p)
    p.set_defaults(handler=cmd_convert)

    p = sub.add_parser("plan", help="print the conversion plan of an NWB file as JSON")
    p.add_argument("file", help="the .nwb file")
    p.add_argument("--full", action="store_true", help="the whole plan (every chunk and work item)")
    _add_conversion_options(p)
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("run", help="convert INPUT_DIR/*.nwb into OUTPUT_DIR (what `make run` does)")
    p.set_defaults(handler=cmd_run)

    if with_import:
        from .pennsieve import add_import_command

        add_import_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(with_import=_needs_importer(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(message)s" if args.debug else "%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("h5py").setLevel(logging.WARNING)
    try:
        # A bad setting names itself (variable and option), not a file: "error: <reason>", exit 2.
        args.settings = _settings(args) if args.command in _SETTINGS_COMMANDS else None
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        source = Path(getattr(args, "file", "") or "nwb2pennsieve").name
        code = 2 if isinstance(exc, ConfigurationError) else 1
        print(f"error: {describe_error(exc, source)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
