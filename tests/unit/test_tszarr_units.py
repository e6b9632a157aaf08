"""Unit channels of a Units table: merged spikes, labels, templates and waveforms; tables of more
units than uint16 labels hold are split in row order."""

from __future__ import annotations

import numpy as np
import pytest

from nwb2pennsieve.bundle.tszarr import units
from nwb2pennsieve.plan.sources import UnitsSource
from nwb2pennsieve.source.spikes import UnitsData

SOURCE = UnitsSource(
    channel_id="units", name="units", path="/units", units=5, spikes=9, templates=True, waveforms=True,
    waveform_rate=30_000.0, rate_from="waveforms.sampling_rate",
)  # fmt: skip


def data() -> UnitsData:
    times = [np.array([5, 1]), np.array([1, 3]), np.array([2]), np.array([4, 4]), np.array([0, 9])]
    waves = [np.full((t.size, 3), u, np.float32) for u, t in enumerate(times)]
    waves[2] = None  # type: ignore[call-overload]
    return UnitsData(
        ids=["10", "11", "12", "13", "14"],
        spike_times_us=times,
        templates=np.arange(15, dtype=np.float32).reshape(5, 3),
        waveforms=waves,  # type: ignore[arg-type]
    )


def test_spikes_are_merged_in_time_ties_in_row_order() -> None:
    (ch,) = units.unit_channels(SOURCE, data(), first_group=7, rate=30_000.0)
    assert ch.group == 7 and ch.label_names == ["10", "11", "12", "13", "14"]
    assert ch.events.tolist() == [0, 1, 1, 2, 3, 4, 4, 5, 9]
    assert ch.labels is not None and ch.labels.tolist() == [4, 0, 1, 2, 1, 3, 3, 0, 4]
    assert ch.waveforms is not None and ch.waveform_period_us == pytest.approx(1e6 / 30_000)
    assert np.isnan(ch.waveforms[3]).all()  # unit 12 has no waveforms: NaN rows
    assert ch.waveforms[1].tolist() == [0, 0, 0] and ch.waveforms[8].tolist() == [4, 4, 4]
    assert ch.templates is not None and ch.templates.shape == (5, 3)


def test_more_units_than_labels_hold_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "MAX_LABELS", 2)
    channels = units.unit_channels(SOURCE, data(), first_group=0, rate=None)
    assert [(c.group, c.id, c.name) for c in channels] == [
        (0, "units#0", "units (units 1-2)"),
        (1, "units#1", "units (units 3-4)"),
        (2, "units#2", "units (units 5-5)"),
    ]
    assert [c.label_names for c in channels] == [["10", "11"], ["12", "13"], ["14"]]
    assert all(c.waveforms is None for c in channels)  # no rate: no waveforms
    assert channels[2].events.tolist() == [0, 9] and channels[2].templates.tolist() == [[12, 13, 14]]  # type: ignore[union-attr]
