"""The bundle's float32 µV, made straight from the samples, are the chunk files' float64 µV rounded once."""

from __future__ import annotations

import numpy as np
import pytest

from nwb2pennsieve.write.chunks import _to_big_endian_uv, to_float32_uv


def _source(dtype: str, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    if dtype == "int16":
        return rng.integers(-32768, 32767, size=shape, dtype=np.int16)
    if dtype == "int64":  # beyond float64's 53 bits: rounded once to float64, as the chunk files hold it
        return rng.integers(-(2**62), 2**62, size=shape, dtype=np.int64)
    values = rng.normal(scale=3e3, size=shape)
    values[0, 0] = -0.0
    values[1, 1] = np.nan
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", ["int16", "int64", "float32", "float64"])
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_float32_is_the_float64_uv_rounded_once(dtype: str, shifted: bool, scaled: bool) -> None:
    rng = np.random.default_rng(3)
    m, width = 3000, 7  # more rows than one pass of the shifted path's float64 scratch
    source = _source(dtype, rng, (m, width))
    factor = 1e6 if shifted else 1.0  # volts to µV; folded into scale when there is no offset
    # per-channel scale: conversion x channel_conversion (x the unit factor when not shifted)
    scale = rng.uniform(1e-7, 2e-6, size=(width, 1)) if scaled else np.ones((width, 1))
    if not shifted:
        scale = scale * factor
    offset = rng.uniform(-1e-3, 1e-3, size=(width, 1)) if shifted else np.zeros((width, 1))
    block = np.empty((width, m))
    _to_big_endian_uv(source.T, block, scale, offset, factor, scaled, shifted)
    expected = block.view(">f8").astype(np.float32).T

    out = np.full((m, width), 7.0, dtype=np.float32)
    to_float32_uv(source, out, scale.T, offset.T, factor, shifted)

    assert out.tobytes() == np.ascontiguousarray(expected).tobytes()


def test_an_offset_that_nearly_cancels_the_data_keeps_the_nwb_order() -> None:
    # (x * scale + offset) * factor, not x * (scale * factor) + offset * factor: the two differ here.
    source = np.array([[1001], [1000], [999]], dtype=np.int16)
    scale, offset, factor = np.array([[1e-3]]), np.array([[-1.0]]), 1e6
    out = np.empty((3, 1), dtype=np.float32)
    to_float32_uv(source, out, scale, offset, factor, True)
    expected = np.float32((source.astype(np.float64) * 1e-3 - 1.0) * 1e6)
    assert out.tobytes() == expected.tobytes()
