"""Stop signals are raised only where stopping is safe (nwb2pennsieve.signals), and the output
folder's steps that a signal must not cut are such places (output/publish.py).

Signals are real (``os.kill`` of this process) with the command's handlers installed; the
moments are made exact by the checkpoints of :mod:`nwb2pennsieve.testing_seams`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwb2pennsieve import signals
from nwb2pennsieve.errors import Interrupted
from nwb2pennsieve.options import ConversionOptions
from nwb2pennsieve.output.publish import MARKER_NAME, OutputFolder, OutputMarker, read_marker
from nwb2pennsieve.testing_seams import SIGNAL_AT


@pytest.fixture
def handlers() -> Iterator[None]:
    restore = signals.install()
    try:
        yield
    finally:
        restore()


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_outside_a_deferred_section_is_raised_at_once(handlers: None) -> None:
    with pytest.raises(Interrupted) as caught:
        sigterm()
    assert caught.value.signum == signal.SIGTERM


def nested(steps: list[str]) -> None:
    with signals.deferred():
        with signals.deferred():
            sigterm()
            steps.append("inner")
        steps.append("outer")  # not cut by the signal
    steps.append("after")


def test_a_signal_inside_deferred_sections_is_raised_when_the_outermost_is_left(handlers: None) -> None:
    steps: list[str] = []
    with pytest.raises(Interrupted):
        nested(steps)
    assert steps == ["inner", "outer"]


def failing() -> None:
    with signals.deferred():
        sigterm()
        raise OSError("disk")


def test_an_error_leaving_a_deferred_section_is_not_replaced_by_the_signal(handlers: None) -> None:
    with pytest.raises(OSError, match="disk"):
        failing()
    assert signals.received() == signal.SIGTERM


def test_only_the_first_signal_is_acted_on(handlers: None) -> None:
    with pytest.raises(Interrupted):
        sigterm()
    os.kill(os.getpid(), signal.SIGINT)  # cleanup then runs undisturbed
    os.kill(os.getpid(), signal.SIGTERM)
    assert signals.received() == signal.SIGTERM


def test_a_signal_while_held_is_raised_on_release(handlers: None) -> None:
    signals.hold()
    os.kill(os.getpid(), signal.SIGINT)
    with signals.deferred():
        pass  # leaving a section raises nothing while held
    with pytest.raises(Interrupted) as caught:
        signals.release()
    assert caught.value.signum == signal.SIGINT


def test_a_signal_as_the_staging_folder_appears_leaves_neither_it_nor_the_lock(
    handlers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SIGNAL_AT, "staged")
    folder = OutputFolder(tmp_path / "out")
    with pytest.raises(Interrupted):
        folder.__enter__()  # a with statement does not call __exit__ when __enter__ raises
    assert os.listdir(tmp_path) == []


def marker(source: str, files: list[str]) -> OutputMarker:
    return OutputMarker(
        source=source, source_bytes=1, source_mtime_ns=1, options=ConversionOptions(), files=files, written_at=None
    )


def publish(out: Path, name: str, source: str = "a.nwb") -> OutputFolder:
    with OutputFolder(out) as folder:
        (folder.staging / name).write_text(source)
        folder.publish(marker(source, [name]))
    return folder


def test_a_signal_just_after_the_swap_neither_undoes_nor_hides_publishing(
    handlers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    publish(out, "channel-00000.metadata.json")
    monkeypatch.setenv(SIGNAL_AT, "swapped")
    folder = publish(out, "channel-00001.metadata.json", "b.nwb")  # returns: the signal is held
    assert folder.published
    assert set(os.listdir(out)) == {"channel-00001.metadata.json", MARKER_NAME}
    marker_now = read_marker(out)
    assert marker_now is not None and marker_now.source == "b.nwb"
    assert any("the old output could not be removed completely (stopped by a signal)" in n for n in folder.notes)
    with pytest.raises(Interrupted):
        signals.release()  # the command says what OUT holds first, then acts on the signal

    monkeypatch.delenv(SIGNAL_AT)
    signals.install()  # a fresh command
    publish(out, "channel-00002.metadata.json", "c.nwb")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # what the stopped removal left is gone
