"""Hostile input: absurd declared sizes, inputs that are not files, links to nothing, objects not
converted, and planning that would never end."""

from __future__ import annotations

import json
import os
import signal
import time
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import pytest

import nwb2pennsieve.local.planning as local
from nwb2pennsieve.cloud.plan_step import OutputTooLargeError, check_output_size
from nwb2pennsieve.errors import InvalidFileError, InvalidInputError
from nwb2pennsieve.local import plan_file
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.plan.items import count_work_items
from nwb2pennsieve.plan.survey import MAX_WORK_ITEMS
from tests.cli_checks import assert_fails_cleanly, run_cli
from tests.factory import SeriesSpec, write_nwb

SERIES = "/acquisition/ElectricalSeries"


def declared(tmp_path: Path, name: str, samples: int, columns: int) -> Path:
    """A tiny file whose series declares ``samples`` x ``columns`` int16, chunked and never written."""
    nwb = write_nwb(tmp_path / name, [SeriesSpec(data=np.ones((20, columns), dtype=np.int16))])
    with h5py.File(nwb, "a") as f:
        g = f[SERIES]
        attrs = dict(g["data"].attrs)
        del g["data"]
        g.create_dataset("data", shape=(samples, columns), chunks=(4096, columns), dtype="i2")
        g["data"].attrs.update(attrs)
    assert nwb.stat().st_size < 1_000_000
    return nwb


# --- hostile sizes ---------------------------------------------------------------------------


def test_a_declared_trillion_samples_plans_in_bounded_time_and_is_refused_for_disk_space(
    tmp_path: Path, capsys
) -> None:
    nwb = declared(tmp_path, "huge.nwb", 10**12, 2)
    started = time.perf_counter()
    plan = plan_file(nwb, ConversionOptions())
    assert time.perf_counter() - started < 20
    series = plan.series[0]
    assert len(series.chunks) == -(-(10**12) // plan.chunk_samples)  # computed, not stored
    assert series.chunks[-1].stop == 10**12
    assert series.chunks[-1].end_us == plan.session_start_us + round((10**12 - 1) * 1e6 / 1000.0)
    assert len(plan.model_dump_json()) < 20_000_000
    needed = plan.output_bytes()
    assert needed > 16e12  # 10^12 x 2 float64, plus the gzip framing
    last = assert_fails_cleanly(capsys, nwb, tmp_path / "out", "needs 16,", "GB free")
    assert "GB but the file system of" in last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_declared_length_too_big_to_list_is_refused_before_listing(tmp_path: Path, capsys) -> None:
    nwb = declared(tmp_path, "wide.nwb", 10**12, 64)
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match=f"more than the {MAX_WORK_ITEMS:,} a plan may hold"):
        plan_file(nwb, ConversionOptions())
    assert time.perf_counter() - started < 20
    code, out, err = run_cli(capsys, "plan", str(nwb))
    assert code == 1 and not out
    assert err.strip().splitlines()[-1].startswith("error: wide.nwb: its plan would have ")
    assert "1,000,000,000,000 samples x 64 channels" in err


def test_with_the_bundle_too_the_count_is_the_items_and_a_huge_length_is_refused(tmp_path: Path) -> None:
    """With the bundle, work items follow its windows: counted without listing them (as many as
    planned), and a declared length too big to list is refused as fast as without it."""
    plan = plan_file(
        declared(tmp_path, "long.nwb", 10**8, 4), ConversionOptions(formats="chunks,bundle", max_item_mb=64)
    )
    (series,) = plan.series
    assert all(i.window is not None for i in plan.work_items)
    assert count_work_items(series, plan.options) == len(plan.work_items) > 1
    # the bundle's levels count in the output's size, beside the chunk files
    chunks_only = plan_file(declared(tmp_path, "long2.nwb", 10**8, 4), ConversionOptions(max_item_mb=64))
    assert plan.output_bytes() > chunks_only.output_bytes() > 0
    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match=f"more than the {MAX_WORK_ITEMS:,} a plan may hold"):
        plan_file(declared(tmp_path, "wide.nwb", 10**12, 64), ConversionOptions(formats="bundle"))
    assert time.perf_counter() - started < 20


def test_the_cloud_refuses_an_output_above_max_output_gb(tmp_path: Path) -> None:
    plan = plan_file(declared(tmp_path, "huge.nwb", 10**10, 1), ConversionOptions())
    check_output_size(plan, 1000.0)  # ~80 GB: under the limit
    with pytest.raises(OutputTooLargeError) as e:
        check_output_size(plan, 50.0)
    message = str(e.value)
    assert message.startswith("huge.nwb: its planned output is 80.")
    assert "GB, more than MaxOutputGb (50 GB)" in message


def test_free_space_check_passes_for_a_normal_file(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "ok.nwb", [SeriesSpec(data=np.ones((50, 2)))])
    code, _, err = run_cli(capsys, "convert", str(nwb), "-o", str(tmp_path / "out"))
    assert code == 0, err


# --- inputs that are not files ------------------------------------------------------------------


def test_a_dangling_symbolic_link_is_named(tmp_path: Path, capsys) -> None:
    link = tmp_path / "link.nwb"
    link.symlink_to(tmp_path / "nowhere.nwb")
    assert_fails_cleanly(capsys, link, tmp_path / "out", "symbolic link to", "nowhere.nwb", "does not exist")


def test_a_missing_file_is_named(tmp_path: Path, capsys) -> None:
    assert_fails_cleanly(capsys, tmp_path / "absent.nwb", tmp_path / "out", "there is no such file")


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "pipe.nwb"
    os.mkfifo(fifo)
    assert_fails_cleanly(capsys, fifo, tmp_path / "out", "named pipe (FIFO), not a file")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_a_device_is_refused(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "convert", "/dev/zero", "-o", str(tmp_path / "out"))
    assert code == 1
    assert err.strip().splitlines()[-1] == "error: zero: it is a character device, not a file: give the NWB file itself"


def test_a_directory_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "dir.nwb").mkdir()
    assert_fails_cleanly(capsys, tmp_path / "dir.nwb", tmp_path / "out", "it is a directory, not a file")


# --- links to nothing inside the file ---------------------------------------------------------


def test_a_dangling_soft_link_in_a_series_is_named(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "soft.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        g = f[SERIES]
        del g["starting_time"]
        g["starting_time"] = h5py.SoftLink("/nowhere/starting_time")
    last = assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "soft link to /nowhere/starting_time")
    assert "neither timestamps" not in last


def test_timestamps_linked_to_a_missing_file_are_named(tmp_path: Path, capsys) -> None:
    nwb = write_nwb(tmp_path / "ext.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        g = f[SERIES]
        del g["starting_time"]
        g["timestamps"] = h5py.ExternalLink("gone.nwb", "/timestamps")
    assert_fails_cleanly(capsys, nwb, tmp_path / "out", SERIES, "timestamps", "external file 'gone.nwb'", "missing")


NOT_FILES = {"fifo": "a named pipe (FIFO)", "device": "a character device", "folder": "a directory"}


@pytest.mark.parametrize("kind", list(NOT_FILES))
@pytest.mark.parametrize("where", ["data", "group"])
def test_an_external_link_to_what_is_not_a_file_is_refused_without_opening_it(
    tmp_path: Path, kind: str, where: str
) -> None:
    """HDF5 opens a link's target blindly: a named pipe without a writer blocks it for ever (the
    planning child then outlived even the command). The target is checked with stat first."""
    nwb = write_nwb(tmp_path / "ext.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    target = tmp_path / "ext.h5"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    with h5py.File(nwb, "a") as f:
        if where == "data":
            del f[SERIES]["data"]
            f[SERIES]["data"] = h5py.ExternalLink("ext.h5", "/data")
        else:
            f["/acquisition/linked"] = h5py.ExternalLink("ext.h5", "/acquisition")
    started = time.monotonic()
    with pytest.raises(InvalidFileError) as caught:
        plan_file(nwb, ConversionOptions(), timeout_s=5)
    assert time.monotonic() - started < 3  # not the planning timeout
    reason = f"it links to the external file 'ext.h5', which is {NOT_FILES[kind]}, not a file"
    path = SERIES if where == "data" else "/acquisition/linked"
    assert path in str(caught.value) and reason in str(caught.value), str(caught.value)


# --- the cached schema is read only when needed ----------------------------------------------------


def test_the_cached_schema_is_read_only_for_a_type_that_is_not_core(tmp_path: Path, monkeypatch) -> None:
    import nwb2pennsieve.source.contents as nwb_module

    def looping(self: object) -> dict[str, str]:  # stands for HDF5 looping in a damaged /specifications
        raise RuntimeError("the cached schema was read")

    monkeypatch.setattr(nwb_module._TypeTree, "_load", looping)
    nwb = write_nwb(tmp_path / "specs.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    with h5py.File(nwb, "a") as f:
        ts = f["acquisition"].create_group("behaviour")
        ts.attrs["neurodata_type"] = "SpatialSeries"
    plan = plan_file(
        nwb, ConversionOptions()
    )  # core types only (ElectricalSeries, SpatialSeries, Device, ...): never read
    assert [o.path for o in plan.not_converted] == ["/acquisition/behaviour"]
    with h5py.File(nwb, "a") as f:  # an extension type needs it: then it is read, and fails cleanly
        f["acquisition"].create_group("mine").attrs["neurodata_type"] = "MyExtensionSeries"
    with pytest.raises(InvalidInputError, match=r"cached schema .* cannot be read, so the type MyExtensionSeries"):
        plan_file(nwb, ConversionOptions())


# --- objects not converted ---------------------------------------------------------------------


def test_objects_not_converted_get_one_note_each(tmp_path: Path, capsys) -> None:
    spikes = SeriesSpec(name="spikes", kind="SpikeEventSeries", data=np.zeros((5, 2, 8)), timestamps=np.arange(5.0))
    nwb = write_nwb(tmp_path / "notes.nwb", [SeriesSpec(data=np.ones((20, 2))), spikes])
    with h5py.File(nwb, "a") as f:
        acq = f["acquisition"]
        for name, ndt in (("ts", "TimeSeries"), ("decomp", "DecompositionSeries"), ("ext", "UnknownSeries")):
            g = acq.create_group(name)
            g.attrs["neurodata_type"] = ndt
            g.create_dataset("data", data=np.ones(5))
    code, _, err = run_cli(capsys, "convert", str(nwb), "-o", str(tmp_path / "out"))
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: notes.nwb: not converted: /acquisition/decomp (DecompositionSeries): not an ElectricalSeries "
        "(only ElectricalSeries and types extending it are converted)",
        "note: notes.nwb: not converted: /acquisition/ext (UnknownSeries): not a core NWB type and the file "
        "caches no schema for it, so it cannot be told whether it is an ElectricalSeries",
        "note: notes.nwb: not converted: /acquisition/spikes (SpikeEventSeries): a SpikeEventSeries holds "
        "spike snippets, not continuous data",
        "note: notes.nwb: not converted: /acquisition/ts (TimeSeries): not an ElectricalSeries "
        "(only ElectricalSeries and types extending it are converted)",
    ]
    code, out, _ = run_cli(capsys, "plan", str(nwb))
    assert code == 0
    listed = json.loads(out)["not_converted"]
    assert [(o["path"], o["neurodata_type"]) for o in listed] == [
        ("/acquisition/decomp", "DecompositionSeries"),
        ("/acquisition/ext", "UnknownSeries"),
        ("/acquisition/spikes", "SpikeEventSeries"),
        ("/acquisition/ts", "TimeSeries"),
    ]


# --- planning that never ends ------------------------------------------------------------------


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan in a forked child, so a patched planner is the one the child runs."""
    monkeypatch.setattr(local, "pool_context", lambda: get_context("fork"))


def _hang(path: str, options: dict) -> None:
    time.sleep(60)


def _crash(path: str, options: dict) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as a crash in HDF5 would end it


def test_planning_that_hangs_is_stopped_at_the_timeout(tmp_path: Path, monkeypatch, forked) -> None:
    nwb = write_nwb(tmp_path / "loop.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    monkeypatch.setattr(local, "_plan_here", _hang)
    started = time.perf_counter()
    with pytest.raises(InvalidInputError) as e:
        plan_file(nwb, ConversionOptions(), timeout_s=0.5)
    assert time.perf_counter() - started < 10
    assert str(e.value).startswith("loop.nwb: planning took longer than 0.5 s (PLAN_TIMEOUT_S) and was stopped")


def test_planning_that_crashes_is_one_line(tmp_path: Path, monkeypatch, forked) -> None:
    nwb = write_nwb(tmp_path / "crash.nwb", [SeriesSpec(data=np.ones((20, 2)))])
    monkeypatch.setattr(local, "_plan_here", _crash)
    with pytest.raises(InvalidInputError, match=r"crash\.nwb: planning was killed by signal 9"):
        plan_file(nwb, ConversionOptions(), timeout_s=30)


def test_planning_in_a_child_gives_the_same_plan_and_errors(tmp_path: Path) -> None:
    nwb = write_nwb(tmp_path / "same.nwb", [SeriesSpec(data=np.ones((500, 3)))])
    assert plan_file(nwb, ConversionOptions(), timeout_s=60) == plan_file(nwb, ConversionOptions())
    bad = write_nwb(tmp_path / "bad.nwb", [SeriesSpec(data=np.ones((20, 2)), unit="furlongs")])
    with pytest.raises(InvalidFileError) as here:
        plan_file(bad, ConversionOptions())
    with pytest.raises(InvalidFileError) as there:
        plan_file(bad, ConversionOptions(), timeout_s=60)
    assert type(there.value) is type(here.value) and str(there.value) == str(here.value)


@pytest.mark.parametrize("rows", [1_000, 2**50])
def test_an_electrodes_column_longer_than_its_table_is_refused_before_it_is_read(tmp_path: Path, rows: int) -> None:
    """A damaged length (issue 17 item 14e): 2**50 rows made numpy's own text the message
    ("Unable to allocate 132. PiB for an array ..."); the column is refused by its declared length."""
    nwb = write_nwb(tmp_path / "f.nwb", [SeriesSpec()])
    with h5py.File(nwb, "r+") as f:
        table = f["/general/extracellular_ephys/electrodes"]
        del table["group_name"]
        table.create_dataset("group_name", shape=(rows,), dtype=h5py.string_dtype(), chunks=(1024,), maxshape=(None,))
    with pytest.raises(InvalidFileError) as caught:
        plan_file(nwb, ConversionOptions())
    line = str(caught.value)
    assert f"the electrodes table's group_name column declares {rows:,} rows, the table has 2" in line, line
    assert "allocate" not in line


def test_an_unexpected_library_error_is_never_shown_raw() -> None:
    from nwb2pennsieve.local.cli import describe_error

    damaged = RuntimeError("Unable to synchronously check link existence (wrong B-tree signature)")
    assert describe_error(damaged, "f.nwb") == "f.nwb: an index (B-tree) is damaged: the file is damaged or truncated"
    assert describe_error(MemoryError(), "f.nwb").startswith("f.nwb: out of memory")
    assert describe_error(OSError(28, "No space left on device", "/x/out"), "f.nwb") == (
        "f.nwb: /x/out: No space left on device"
    )
