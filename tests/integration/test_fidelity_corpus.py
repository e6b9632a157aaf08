"""Output of shared-corpus files equals an independent h5py computation (values within 4 ULP, times within 1 µs)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from nwb2pennsieve.local import convert_file
from nwb2pennsieve.options import ConversionOptions
from tests.expected import assert_matches, read_output

SMALL_CHUNK = 0.001  # as in tests/unit/test_fidelity.py


def convert(nwb: Path, out: Path, **kw) -> Path:
    convert_file(nwb, out, ConversionOptions(**{"chunk_size_mb": SMALL_CHUNK, **kw}), workers=1)
    return out


def test_metricproof_corpus_file_is_stored_values_in_uv(corpus: Path, tmp_path: Path) -> None:
    nwb = corpus / "metricproof-nwb__synthetic_ecephys_session.nwb"
    out = convert(nwb, tmp_path / "out", chunk_size_mb=1)
    assert assert_matches(nwb, out) == 4
    files, meta = read_output(out)
    import h5py

    with h5py.File(nwb) as f:
        stored = f["acquisition/raw_ecephys/data"][()].astype(np.float64)
    for c in range(4):
        np.testing.assert_array_equal(files[c][0].values, stored[:, c])  # conversion 1e-6 V = 1 µV exactly
    assert [meta[c]["name"] for c in range(4)] == ["E0", "E1", "E2", "E3"]
    assert {meta[c]["group"] for c in range(4)} == {"probe0"}
    assert meta[0]["rate"] == 1000.0


def test_pynwb_3_backcompat_labels_subset_and_timestamps(corpus: Path, tmp_path: Path) -> None:
    nwb = corpus / "pynwb-backcompat__3.0.0_electrodes_dynamic_table.nwb"
    out = convert(nwb, tmp_path / "out")
    assert assert_matches(nwb, out) == 2
    _, meta = read_output(out)
    assert [meta[0]["name"], meta[1]["name"]] == ["shank0electrode2", "shank1electrode0"]
    assert [meta[0]["group"], meta[1]["group"]] == ["shank0", "shank1"]
    assert meta[0]["rate"] == 10.0
    assert meta[0]["end"] - meta[0]["start"] == 200_000  # 0.1 s → 0.3 s


def test_gzip_is_stored_with_mtime_zero(tmp_path: Path, corpus: Path) -> None:
    out = convert(corpus / "metricproof-nwb__synthetic_ecephys_session.nwb", tmp_path / "out")
    files, _ = read_output(out)
    raw = files[0][0].raw
    assert raw[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    payload = gzip.decompress(raw)
    assert len(raw) == 10 + len(payload) + 5 * -(-len(payload) // 65535) + 8  # stored blocks only
