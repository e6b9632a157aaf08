"""The SDK the cloud code relies on: an old botocore is refused at cold start, the layer pins a new one."""

from __future__ import annotations

import re

import botocore
import pytest

from layers import build_layers
from nwb2pennsieve.cloud.clients import MIN_BOTOCORE, check_sdk, s3_client
from nwb2pennsieve.errors import ConfigurationError
from tests.cloud_fixtures import ROOT


def test_an_old_botocore_is_refused_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore, "__version__", "1.35.68")
    with pytest.raises(ConfigurationError, match=r"botocore 1\.35\.68 .*IfMatch needs 1\.35\.69"):
        s3_client()  # every handler makes its clients at module scope: its cold start
    check_sdk("1.35.69")
    check_sdk("1.43.127")
    with pytest.raises(ConfigurationError):
        check_sdk("1.34.162")


def test_the_loaded_botocore_knows_if_match() -> None:
    """What the tests run with is what the layer ships: PutObject takes IfMatch and IfNoneMatch."""
    check_sdk()
    shape = s3_client().meta.service_model.operation_model("PutObject").input_shape
    assert {"IfMatch", "IfNoneMatch"} <= set(shape.members)


def pins() -> dict[str, str]:
    text = (ROOT / "layers" / "deps" / "requirements.txt").read_text()
    return dict(re.findall(r"^([A-Za-z0-9_.\[\]-]+)==(\S+)", text, re.MULTILINE))


def test_the_dependency_layer_ships_a_botocore_with_if_match() -> None:
    pinned = pins()
    assert {"boto3", "botocore", "s3transfer"} <= set(pinned)
    version = tuple(int(p) for p in pinned["botocore"].split(".")[:3])
    assert version >= MIN_BOTOCORE
    assert not hasattr(build_layers, "RUNTIME_PROVIDED")  # nothing of the SDK is trimmed out
