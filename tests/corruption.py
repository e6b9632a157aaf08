"""Seeded corruption of small NWB files, and the check every conversion of one must pass.

Shared by the fuzz test (tests/integration/test_fuzz.py) and the bigger run (bench/fuzz.py).
A variant is a base file (chunked gzip with a gap, contiguous with timestamps, Zstd chunks, Blosc
chunks) damaged one way: bytes flipped anywhere, the file cut short, a page zeroed, bytes flipped
inside a stored data chunk, inside an object header or inside an attribute message. Each is
converted by the command line in a subprocess with a time limit; the run must end in exactly one of:
- exit 0 with output equal to the independent computation (tests/expected.py, which decodes Zstd
  and Blosc chunks with the codecs' own libraries, and reads attributes strictly), or
- exit 1 with one final stderr line ``error: FILE: ...`` naming the file, no traceback and no
  chunk file (nor staging directory) left behind.
Anything else (a traceback, a signal, a hang, another exit status, wrong output, raw library text
on any line of stdout or stderr) is a failure.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from tests.expected import assert_matches
from tests.factory import SeriesSpec, gappy_timestamps, write_nwb

KINDS = ("flip", "truncate", "zero-page", "chunk", "header", "attr")
# Library text that must never reach a user (HDF5's, numpy's, Python's), on any line.
RAW = re.compile(
    r"Unable to|Can't |synchronously|HDF5-DIAG|\bH5[A-Z]|Traceback|Exception ignored|\[Errno|"
    r"\b[A-Z][A-Za-z]+(Error|Exception)\(|\b[A-Z][A-Za-z]+Error: |allocate|object of type|"
    r"invalid literal|index \d+ is out of bounds|unhashable|NoneType"
)
PAGE = 4096


@dataclass(frozen=True)
class Layout:
    """Where a base file keeps its object headers and its stored chunks (byte ranges)."""

    headers: list[int]
    chunks: list[tuple[int, int]]
    attributes: list[int]  # where attribute names (of ATTRIBUTES) occur


def base_files(directory: Path) -> list[Path]:
    """Small files covering both timings, chunked gzip and contiguous data, and a gap."""
    from nwb2pennsieve.local.cli import sample_path

    directory.mkdir(parents=True, exist_ok=True)
    sample = directory / "sample.nwb"
    shutil.copyfile(sample_path(), sample)
    rng = np.random.default_rng(7)
    t = gappy_timestamps(3000, 1000.0, {1200: 2.0})
    plain = write_nwb(
        directory / "plain.nwb",
        [
            SeriesSpec(data=rng.integers(-500, 500, (3000, 3)).astype(np.int16), timestamps=t, rate=None),
            SeriesSpec(name="lfp", data=rng.normal(size=(800, 2)), where="lfp", rate=250.0),
        ],
    )
    compressed = [
        write_nwb(
            directory / f"{name}.nwb",
            [SeriesSpec(data=rng.integers(-500, 500, (3000, 3)).astype(np.int16), rate=1000.0, hdf5_filters=filters)],
        )
        for name, filters in (
            ("zstd", {**hdf5plugin.Zstd(clevel=3), "chunks": (256, 3)}),
            ("blosc", {**hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE), "chunks": (256, 3)}),
        )
    ]
    return [sample, plain, *compressed]


def layout(path: Path) -> Layout:
    headers: list[int] = []
    chunks: list[tuple[int, int]] = []

    def visit(_name: str, obj: h5py.HLObject) -> None:
        info = h5py.h5o.get_info(obj.id)
        headers.append(int(info.addr))
        if isinstance(obj, h5py.Dataset) and obj.chunks:
            for i in range(obj.id.get_num_chunks()):
                c = obj.id.get_chunk_info(i)
                if c.byte_offset is not None and c.size:
                    chunks.append((int(c.byte_offset), int(c.size)))

    with h5py.File(path, "r") as f:
        headers.append(int(h5py.h5o.get_info(f.id).addr))  # the root group's
        f.visititems(visit)
    return Layout(sorted(set(h for h in headers if h > 0)), chunks, attribute_messages(path.read_bytes()))


# Attributes whose damage changes what a conversion reads (and HDMF's typed-object ones).
ATTRIBUTES = (b"neurodata_type", b"conversion", b"offset", b"unit", b"rate", b"namespace", b"table")
# An attribute message (HDF5 1.8 layout, what h5py writes by default): version, reserved, name,
# datatype and dataspace sizes (8 bytes), then the name; its datatype, dataspace and value follow.
MESSAGE_HEAD = 8


def attribute_name_at(path: Path, obj: str, name: str) -> int:
    """The byte offset of the name of ``obj``'s attribute ``name``: the occurrence of the name whose
    damage makes that attribute disappear from that object (found, not assumed)."""
    raw = path.read_bytes()
    probe = path.with_suffix(".probe")
    try:
        for m in re.finditer(re.escape(name.encode()), raw):
            damaged = bytearray(raw)
            damaged[m.start() + 2] ^= 0x5A
            probe.write_bytes(bytes(damaged))
            with h5py.File(probe, "r") as f:
                if not h5py.h5a.exists(f[obj].id, name.encode()):
                    return m.start()
    finally:
        probe.unlink(missing_ok=True)
    raise LookupError(f"no attribute {name} on {obj} in {path}")


def damage_attribute(path: Path, obj: str, name: str, how: str) -> None:
    """Damage ``obj``'s attribute ``name`` in place: ``how`` is ``"header"`` (the message's version
    byte: HDF5 cannot read the message), ``"name"`` (a byte of its name: the attribute is now
    called something else)."""
    at = attribute_name_at(path, obj, name)
    with open(path, "r+b") as fh:
        offset = at - MESSAGE_HEAD if how == "header" else at + 2
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x5A]))


def attribute_messages(raw: bytes) -> list[int]:
    """Where the names of the :data:`ATTRIBUTES` occur in a file's bytes (attribute messages, mostly)."""
    return sorted(m.start() for name in ATTRIBUTES for m in re.finditer(re.escape(name), raw))


def _flip(data: bytearray, rng: random.Random, start: int, stop: int, count: int) -> None:
    for _ in range(count):
        i = rng.randrange(start, max(start + 1, min(stop, len(data))))
        data[i] ^= 1 << rng.randrange(8)


def corrupt(source: Path, target: Path, rng: random.Random, kind: str, where: Layout) -> str:
    """Write ``source`` damaged one way (``kind``) to ``target``; return what was done."""
    data = bytearray(source.read_bytes())
    size = len(data)
    if kind == "flip":
        n = rng.randint(1, 8)
        _flip(data, rng, 0, size, n)
        what = f"{n} bits flipped"
    elif kind == "truncate":
        cut = rng.randrange(size // 8, size - 1)
        del data[cut:]
        what = f"cut at byte {cut} of {size}"
    elif kind == "zero-page":
        page = rng.randrange(size // PAGE + 1) * PAGE
        data[page : page + PAGE] = bytes(len(data[page : page + PAGE]))
        what = f"page at byte {page} zeroed"
    elif kind == "chunk" and where.chunks:
        offset, length = rng.choice(where.chunks)
        n = rng.randint(1, 4)
        _flip(data, rng, offset, offset + length, n)
        what = f"{n} bits flipped in the chunk at byte {offset}"
    elif kind == "attr" and where.attributes:
        at = rng.choice(where.attributes)
        n = rng.randint(1, 4)
        _flip(data, rng, at - MESSAGE_HEAD, at + 48, n)
        what = f"{n} bits flipped around the attribute name at byte {at}"
    else:  # "header" (and "chunk" in a file without chunks)
        addr = rng.choice(where.headers)
        n = rng.randint(1, 4)
        _flip(data, rng, addr, addr + 64, n)
        what = f"{n} bits flipped in the object header at byte {addr}"
    target.write_bytes(bytes(data))
    return what


@dataclass(frozen=True)
class Outcome:
    name: str
    what: str
    code: int | None
    last_line: str
    problem: str | None  # None: one of the two allowed outcomes


def run_variant(nwb: Path, out: Path, what: str, *, time_limit: float = 60.0) -> Outcome:
    """Convert ``nwb`` with the command line in a subprocess and classify what happened."""
    env = dict(os.environ, WORKERS="1", PLAN_TIMEOUT_S=str(time_limit / 2))
    env.pop("SKIP_INVALID_SERIES", None)
    command = [sys.executable, "-m", "nwb2pennsieve.local.cli", "convert", str(nwb), "-o", str(out)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=time_limit, env=env)
    except subprocess.TimeoutExpired:
        return Outcome(nwb.name, what, None, "", f"no end within {time_limit:g} s (a hang)")
    lines = proc.stderr.strip().splitlines()
    last = lines[-1] if lines else ""
    left = (
        sorted(p.name for p in out.rglob("*") if p.name.endswith(".bin.gz") or ".staging" in p.name)
        if out.exists()
        else []
    )

    def outcome(problem: str | None) -> Outcome:
        return Outcome(nwb.name, what, proc.returncode, last, problem)

    if "Traceback" in proc.stderr:
        return outcome("a traceback")
    raw = [line for line in (proc.stdout + proc.stderr).splitlines() if RAW.search(line)]
    if raw:
        return outcome(f"raw library text: {raw[0][:200]}")
    if proc.returncode < 0:
        return outcome(f"killed by signal {-proc.returncode}")
    if proc.returncode == 0:
        try:
            assert_matches(nwb, out)
        except Exception as exc:  # an AssertionError, or the independent reader failing on it
            return outcome(f"exit 0 but the output differs from the independent computation: {exc}")
        return outcome(None)
    if proc.returncode != 1:
        return outcome(f"exit status {proc.returncode}")
    if not last.startswith(f"error: {nwb.name}: "):
        return outcome("exit 1 but the last line does not name the file")
    if left:
        return outcome(f"exit 1 but chunk files were left behind: {left[:3]}")
    return outcome(None)


def variants(bases: list[Path], count: int, seed: int) -> list[tuple[Path, str, random.Random]]:
    """``count`` (base file, kind, rng) triples, every kind and base in turn, seeded."""
    rng = random.Random(seed)
    return [
        (bases[i % len(bases)], KINDS[(i // len(bases)) % len(KINDS)], random.Random(rng.random()))
        for i in range(count)
    ]
