"""A conversion's output replaces the previous one whole, never mixed, and never deletes what is not ours."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from nwb2pennsieve.errors import StorageError
from nwb2pennsieve.local import convert_file, plan_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output import publish
from nwb2pennsieve.output.publish import MARKER_NAME, OutputFolder, read_marker
from tests.factory import SeriesSpec, write_nwb


def nwb(path: Path, *, seconds: float = 1.0, channels: int = 3, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(-999, 999, size=(int(seconds * 1000), channels), dtype=np.int16)
    return write_nwb(path, [SeriesSpec(data=data)])


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def expected_names(path: Path, chunk_size_mb: float) -> set[str]:
    plan = plan_file(path, ConversionOptions(chunk_size_mb=chunk_size_mb))
    return {*plan.file_names(), *(f"channel-{c.index:05d}.metadata.json" for s in plan.series for c in s.channels)}


def test_a_rerun_with_another_chunk_size_replaces_the_output_entirely(tmp_path: Path) -> None:
    src = nwb(tmp_path / "rec.nwb")
    out = tmp_path / "out" / "rec"
    convert_file(src, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    small = expected_names(src, 0.002)
    assert names(out) == small | {MARKER_NAME}
    convert_file(src, out, ConversionOptions(chunk_size_mb=1), workers=1)
    big = expected_names(src, 1)
    assert big != small
    assert names(out) == big | {MARKER_NAME}  # no chunk file of the first conversion is left
    assert names(tmp_path / "out") == {"rec"}  # nor a staging folder, a backup or the lock file
    marker = read_marker(out)
    assert marker is not None
    assert (marker.source, marker.options.chunk_size_mb, set(marker.files)) == ("rec.nwb", 1.0, big)


def test_another_file_with_the_same_stem_and_a_newer_version_replace_it(tmp_path: Path) -> None:
    out = tmp_path / "rec"
    convert_file(nwb(tmp_path / "a" / "rec.nwb", channels=5), out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    other = nwb(tmp_path / "b" / "rec.nwb", channels=2, seconds=0.5, seed=1)
    convert_file(other, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    assert names(out) == expected_names(other, 0.002) | {MARKER_NAME}
    newer = nwb(tmp_path / "b" / "rec.nwb", channels=2, seconds=0.7, seed=2)
    convert_file(newer, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    assert names(out) == expected_names(newer, 0.002) | {MARKER_NAME}


def test_a_folder_holding_files_no_conversion_wrote_is_refused_and_left_alone(tmp_path: Path) -> None:
    src = nwb(tmp_path / "rec.nwb")
    out = tmp_path / "out"
    convert_file(src, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(StorageError) as caught:
        convert_file(src, out, ConversionOptions(chunk_size_mb=1), workers=1)
    assert str(caught.value) == (
        f"output {out}: holds files no conversion wrote (figures/, notes.txt); move them away or choose another output"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert names(tmp_path) == {"rec.nwb", "out"}


def test_an_output_of_an_older_version_without_a_marker_is_ours(tmp_path: Path) -> None:
    src = nwb(tmp_path / "rec.nwb")
    out = tmp_path / "out"
    convert_file(src, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    (out / MARKER_NAME).unlink()  # what versions before the marker wrote: names of the output's form
    (out / ".channel-00000_1_2.bin.gz.123.abcd1234.tmp").write_bytes(b"left by a killed writer")
    convert_file(src, out, ConversionOptions(chunk_size_mb=1), workers=1)
    assert names(out) == expected_names(src, 1) | {MARKER_NAME}


def test_import_records_stay_with_the_same_output_only(tmp_path: Path) -> None:
    src = nwb(tmp_path / "rec.nwb")
    out = tmp_path / "out"
    convert_file(src, out, ConversionOptions(chunk_size_mb=0.002), workers=1)
    (out / "import-state.json").write_text("{}")
    convert_file(src, out, ConversionOptions(chunk_size_mb=0.002), workers=1)  # the same output again: they describe it
    assert (out / "import-state.json").read_text() == "{}"
    convert_file(src, out, ConversionOptions(chunk_size_mb=1), workers=1)  # another output: they go with the old one
    assert not (out / "import-state.json").exists()


def test_what_a_killed_run_left_is_cleared_by_the_next_one(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = OutputFolder(out)
    # killed between the two renames of the fallback swap: the old output under -old, no output
    folder.backup.mkdir()
    (folder.backup / "channel-00000.metadata.json").write_text("old")
    folder.staging.mkdir()
    (folder.staging / "channel-00000.metadata.json").write_text("new, never published")
    with OutputFolder(out) as again:
        assert (out / "channel-00000.metadata.json").read_text() == "old"  # put back first
        assert not folder.backup.exists()
        assert list(again.staging.iterdir()) == []  # a fresh staging folder
    assert names(tmp_path) == {"out"}


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
def test_a_reader_sees_the_old_or_the_new_output_never_a_mix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:
        monkeypatch.setattr(publish, "_exchange", lambda a, b: False)  # as on a system without one
    out = tmp_path / "out"
    versions = [{f"channel-{i:05d}.metadata.json" for i in range(first, first + 9)} for first in (0, 100)]
    seen: list[frozenset[str] | None] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(frozenset(os.listdir(out)) - {MARKER_NAME})
            except FileNotFoundError:
                seen.append(None)

    def convert(files: set[str]) -> None:
        with OutputFolder(out) as folder:
            for name in files:
                (folder.staging / name).write_text(name)
            folder.publish(
                publish.OutputMarker(
                    source="x.nwb",
                    source_bytes=1,
                    source_mtime_ns=1,
                    options=ConversionOptions(chunk_size_mb=1, max_item_mb=1),
                    files=sorted(files),
                )
            )

    convert(versions[0])
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(40):
            convert(versions[(i + 1) % 2])
    finally:
        stop.set()
        reader.join()
    # A listing is of one version: whole when the folder was opened after the swap; a reader that
    # opened the old folder just before it may see that one's files go as it is deleted.
    mixed = [s for s in seen if s is not None and s & versions[0] and s & versions[1]]
    assert not mixed, mixed[:3]
    assert len([s for s in seen if s is not None and s in ({*map(frozenset, versions)})]) > len(seen) // 2
    if exchange:
        assert None not in seen  # the output is never absent either


def test_two_conversions_into_one_output_are_kept_apart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    busy = rf"another conversion \(pid {os.getpid()}\) is writing it"
    with OutputFolder(out), pytest.raises(StorageError, match=busy):
        OutputFolder(out).__enter__()
    with OutputFolder(out):  # free again once the first has ended
        pass
    assert names(tmp_path) == set()


def test_output_errors_name_the_output(tmp_path: Path) -> None:
    src = nwb(tmp_path / "rec.nwb")
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(StorageError, match=rf"^output {tmp_path}/plain/out: {tmp_path}/plain is a file, not a folder$"):
        convert_file(src, tmp_path / "plain" / "out", ConversionOptions(), workers=1)
    assert (tmp_path / "plain").read_text() == "a file"


def test_an_output_that_is_a_mount_point_is_refused_before_anything_is_written(capsys) -> None:
    """The root folder is a mount point everywhere: nothing may be created beside or inside it."""
    from nwb2pennsieve.local.cli import sample_path
    from tests.cli_checks import run_cli

    before = set(os.listdir("/"))
    code, _, err = run_cli(capsys, "convert", str(sample_path()), "-o", "/")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: sample.nwb: output /: is a mount point: an output is published by swapping in a folder "
        "written beside it, which a mount point cannot take part in; give a folder inside it"
    )
    assert set(os.listdir("/")) == before


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note:")]


def test_replacing_another_files_conversion_says_which_and_when(tmp_path: Path, capsys) -> None:
    from tests.cli_checks import run_cli

    a, b, out = nwb(tmp_path / "A.nwb"), nwb(tmp_path / "B.nwb", seed=1), tmp_path / "out"
    for argv in (["--chunk-size-mb", "1"], ["--chunk-size-mb", "0.002"]):  # the same file again: no news
        code, _, err = run_cli(capsys, "convert", str(a), "-o", str(out), *argv)
        assert code == 0 and notes(err) == [], err
    made = read_marker(out)
    assert made is not None and made.written_at is not None
    code, _, err = run_cli(capsys, "convert", str(b), "-o", str(out))
    assert code == 0
    when = datetime.fromisoformat(made.written_at).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert notes(err) == [f"note: output {out} held the conversion of A.nwb, made {when}; it now holds that of B.nwb"]
    assert abs(datetime.fromisoformat(made.written_at) - datetime.now(UTC)) < timedelta(minutes=5)


def test_another_file_of_the_same_name_and_an_old_marker_are_told_apart(tmp_path: Path, capsys) -> None:
    """Two folders' rec.nwb into one output: the note says which is which (size, mtime). A marker
    written before markers said when: the marker file's own time."""
    from tests.cli_checks import run_cli

    first, second, out = nwb(tmp_path / "x" / "rec.nwb"), nwb(tmp_path / "y" / "rec.nwb", channels=2), tmp_path / "o"
    os.utime(first, (1_700_000_000, 1_700_000_000))
    assert run_cli(capsys, "convert", str(first), "-o", str(out))[0] == 0
    body = json.loads((out / MARKER_NAME).read_text())
    del body["written_at"]
    (out / MARKER_NAME).write_text(json.dumps(body))
    os.utime(out / MARKER_NAME, (1_750_000_000, 1_750_000_000))
    code, _, err = run_cli(capsys, "convert", str(second), "-o", str(out))
    assert code == 0
    size, mtime = second.stat().st_size, datetime.fromtimestamp(second.stat().st_mtime, UTC)
    assert notes(err) == [
        f"note: output {out} held the conversion of rec.nwb ({first.stat().st_size:,} bytes, modified "
        "2023-11-14 22:13:20 UTC), made 2025-06-15 15:06:40 UTC; it now holds that of rec.nwb "
        f"({size:,} bytes, modified {mtime:%Y-%m-%d %H:%M:%S} UTC)"
    ]
