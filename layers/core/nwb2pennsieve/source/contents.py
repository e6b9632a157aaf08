"""What an NWB file holds: its ElectricalSeries (and types extending it, found through the schema
the file caches), the objects that are not converted and why, and the objects that cannot be read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import h5py

from ..errors import InvalidInputError, InvalidSeriesError
from .nwb import (
    ELECTRICAL_SERIES,
    H5_ERRORS,
    SPIKE_EVENT_SERIES,
    damage_reason,
    external_link_problem,
    link_reason,
    neurodata_type,
    text,
)

log = logging.getLogger(__name__)

# The core NWB types (and hdmf-common's) that are TimeSeries: none but ElectricalSeries and
# SpikeEventSeries is one, so these are reported as not converted without reading the file's
# cached schema (/specifications, which a damaged file can send HDF5 looping through).
CORE_TIME_SERIES = frozenset(
    {
        "AbstractFeatureSeries", "AnnotationSeries", "CurrentClampSeries", "CurrentClampStimulusSeries",
        "DecompositionSeries", "IZeroClampSeries", "ImageMaskSeries", "ImageSeries", "IndexSeries",
        "IntervalSeries", "OnePhotonSeries", "OpticalSeries", "OptogeneticSeries", "PatchClampSeries",
        "RoiResponseSeries", "SpatialSeries", "TimeSeries", "TwoPhotonSeries", "VoltageClampSeries",
        "VoltageClampStimulusSeries",
    }
)  # fmt: skip
# The other core NWB / hdmf-common / hdmf-experimental types (past names included): never a series.
CORE_OTHER_TYPES = frozenset(
    {
        "AlignedDynamicTable", "BaseImage", "BehavioralEpochs", "BehavioralEvents", "BehavioralTimeSeries",
        "CSRMatrix", "ClusterWaveforms", "Clustering", "CompassDirection", "Container", "CorrectedImageStack",
        "Data", "Device", "DeviceModel", "DfOverF", "DurationVectorData", "DynamicTable", "DynamicTableRegion",
        "ElectrodeGroup", "ElectrodesTable", "ElementIdentifiers", "EnumData", "EventDetection", "EventWaveform",
        "EventsTable", "ExperimentalConditionsTable", "ExternalImage", "ExternalResources", "EyeTracking",
        "FeatureExtraction", "FilteredEphys", "Fluorescence", "FrequencyBandsTable", "GrayscaleImage", "HERD",
        "Image", "ImageReferences", "ImageSegmentation", "Images", "ImagingPlane", "ImagingRetinotopy", "Index",
        "IntracellularElectrode", "IntracellularElectrodesTable", "IntracellularRecordingsTable",
        "IntracellularResponsesTable", "IntracellularStimuliTable", "LFP", "LabMetaData", "MeaningsTable",
        "MotionCorrection", "NWBContainer", "NWBData", "NWBDataInterface", "NWBFile", "OpticalChannel",
        "OptogeneticStimulusSite", "PlaneSegmentation", "Position", "ProcessingModule", "PupilTracking",
        "RGBAImage", "RGBImage", "RepetitionsTable", "ScratchData", "SequentialRecordingsTable",
        "SimpleMultiContainer", "SimultaneousRecordingsTable", "Subject", "SweepTable", "TimeIntervals",
        "TimeSeriesReferenceVectorData", "TimestampVectorData", "Units", "VectorData", "VectorIndex", "VocabData",
    }
)  # fmt: skip
METADATA_PREFIX = "/general/"  # devices, electrodes, subject: NWB puts no data table there
NOT_ELECTRICAL = "not an ElectricalSeries (only ElectricalSeries and types extending it are converted)"


class _TypeTree:
    """neurodata_type inheritance, from the schema cached in ``/specifications`` for extension types.

    Core types are known without reading the file; the cached schema is read only when the file
    holds a type that is not a core type, and then once.
    """

    def __init__(self, h5: h5py.File) -> None:
        self._h5 = h5
        self._parents: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        parents: dict[str, str] = {}
        specs = self._h5.get("specifications")
        if isinstance(specs, h5py.Group):
            for ns in specs.values():
                for version in ns.values() if isinstance(ns, h5py.Group) else ():
                    for source, ds in version.items() if isinstance(version, h5py.Group) else ():
                        if source == "namespace" or not isinstance(ds, h5py.Dataset):
                            continue
                        try:
                            doc = json.loads(text(ds[()]))
                        except (ValueError, TypeError):
                            continue
                        _collect_types(doc, parents)
        return parents

    def core_ancestor(self, neurodata_type: str) -> str | None:
        """The nearest core type ``neurodata_type`` is or extends; None when the cached schema does not say."""
        if neurodata_type in CORE_TIME_SERIES or neurodata_type in CORE_OTHER_TYPES:
            return neurodata_type
        if neurodata_type in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES):
            return neurodata_type
        if self._parents is None:
            try:
                self._parents = self._load()
            except (KeyError, OSError, RuntimeError, ValueError) as exc:
                raise InvalidInputError(
                    f"its cached schema (/specifications) cannot be read, so the type {neurodata_type} "
                    f"cannot be checked: {damage_reason(exc)}"
                ) from None
        seen = set()
        current = neurodata_type
        while current in self._parents and current not in seen:
            seen.add(current)
            current = self._parents[current]
            if current in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES) or current in CORE_TIME_SERIES:
                return current
            if current in CORE_OTHER_TYPES:
                return current
        return None


def _collect_types(spec: Any, parents: dict[str, str]) -> None:
    if isinstance(spec, dict):
        child = spec.get("neurodata_type_def") or spec.get("data_type_def")
        parent = spec.get("neurodata_type_inc") or spec.get("data_type_inc")
        if isinstance(child, str) and isinstance(parent, str):
            parents[child] = parent
        for value in spec.values():
            _collect_types(value, parents)
    elif isinstance(spec, list):
        for value in spec:
            _collect_types(value, parents)


@dataclass(frozen=True)
class FoundSeries:
    path: str
    neurodata_type: str
    group: h5py.Group
    core_type: str = ELECTRICAL_SERIES  # the core type it is or extends (TimeSeries, AnnotationSeries, ...)


@dataclass(frozen=True)
class UnreadableObject:
    """An object the search could not open or list: it may be a series, so it is never ignored."""

    path: str
    reason: str


@dataclass(frozen=True)
class OtherObject:
    """An object that may hold time series but is not an ElectricalSeries: reported, not converted."""

    path: str
    neurodata_type: str
    reason: str


@dataclass(frozen=True)
class FileContents:
    series: list[FoundSeries]
    other_types: list[str]
    unreadable: list[UnreadableObject]
    others: list[OtherObject]
    # The other TimeSeries (in ``others`` too, as not converted into chunk files), the TimeIntervals
    # and Units tables: what the TS-Zarr bundle reads besides the ElectricalSeries.
    timeseries: list[FoundSeries] = field(default_factory=list)
    intervals: list[FoundSeries] = field(default_factory=list)
    units: list[FoundSeries] = field(default_factory=list)


def find_electrical_series(h5: h5py.File) -> FileContents:
    """Every ElectricalSeries (or subtype) in the file, sorted by HDF5 path, and what else it holds.

    Hard links and external links are followed; soft links are not (their target is found at its
    own path, and following them would list a series twice). An object that cannot be opened (a
    damaged object header, an external link to a missing file) or a group whose links cannot be
    listed is reported in ``unreadable``, never dropped. Other TimeSeries (and extension types the
    file caches no schema for) are listed in ``others``. The cached schema is read only when a
    type is not a core type.
    """
    walk = _Walk(_TypeTree(h5))
    walk.group(h5, "")
    walk.found.sort(key=lambda s: s.path)
    return FileContents(
        walk.found,
        sorted(walk.other_types),
        sorted(walk.unreadable, key=lambda u: u.path),
        sorted(walk.others, key=lambda o: o.path),
        timeseries=sorted(walk.timeseries, key=lambda s: s.path),
        intervals=sorted(walk.tables["TimeIntervals"], key=lambda s: s.path),
        units=sorted(walk.tables["Units"], key=lambda s: s.path),
    )


class _Walk:
    """One walk over the file's groups: what :func:`find_electrical_series` reports."""

    def __init__(self, types: _TypeTree) -> None:
        self.types = types
        self.found: list[FoundSeries] = []
        self.other_types: set[str] = set()
        self.unreadable: list[UnreadableObject] = []
        self.others: list[OtherObject] = []
        self.timeseries: list[FoundSeries] = []
        self.tables: dict[str, list[FoundSeries]] = {"TimeIntervals": [], "Units": []}
        self.seen: set[tuple[str, int]] = set()

    def group(self, group: h5py.Group, path: str) -> None:
        try:
            keys = sorted(group.keys())
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            self.unreadable.append(UnreadableObject(path or "/", damage_reason(exc)))
            return
        for key in keys:
            if path == "" and key == "specifications":
                continue
            opened = self._open(group, key, f"{path}/{key}")
            if opened is not None and not self._classify(*opened):
                self.group(opened[0], opened[1])

    def _open(self, group: h5py.Group, key: str, path: str) -> tuple[h5py.Group, str, str] | None:
        """The child group at ``key`` with its neurodata type, once per object (None: not a group,
        a soft link, seen already, or unreadable, which is recorded)."""
        try:
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.SoftLink):
                return None
            problem = external_link_problem(group, link)
            if problem is not None:
                self.unreadable.append(UnreadableObject(path, problem))
                return None
            obj = group[key]
            if not isinstance(obj, h5py.Group):
                return None
            ident = (obj.file.filename, hash(obj.id))
            ndt = neurodata_type(obj)
        except InvalidSeriesError as exc:
            self.unreadable.append(UnreadableObject(path, exc.reason))
            return None
        except H5_ERRORS as exc:
            log.debug("cannot open %s: %s", path, exc)
            self.unreadable.append(UnreadableObject(path, link_reason(group, key, exc)))
            return None
        if ident in self.seen:
            return None
        self.seen.add(ident)
        return obj, path, ndt

    def _classify(self, obj: h5py.Group, path: str, ndt: str) -> bool:
        """Record a typed object; True when it is a series (its children are not walked)."""
        if not ndt:
            return False
        ancestor = self.types.core_ancestor(ndt)
        if ancestor in (ELECTRICAL_SERIES, SPIKE_EVENT_SERIES):
            self.found.append(FoundSeries(path, ndt, obj))
            return True
        self.other_types.add(ndt)
        if ancestor in self.tables and not path.startswith(METADATA_PREFIX):
            self.tables[ancestor].append(FoundSeries(path, ndt, obj, ancestor))
        if ancestor is None:
            self.others.append(
                OtherObject(
                    path,
                    ndt,
                    "not a core NWB type and the file caches no schema for it, so it cannot be "
                    "told whether it is an ElectricalSeries",
                )
            )
        elif ancestor in CORE_TIME_SERIES:
            why = NOT_ELECTRICAL if ancestor == ndt else f"it extends {ancestor}; {NOT_ELECTRICAL}"
            self.others.append(OtherObject(path, ndt, why))
            self.timeseries.append(FoundSeries(path, ndt, obj, ancestor))
        return False
