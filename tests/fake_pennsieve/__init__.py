"""A fake Pennsieve server for the import tests and manual trials (``python -m tests.fake_pennsieve``)."""

from .cognito import ApiKey, MotoCognito
from .handler import Fault
from .server import FakeImport, FakePennsieve

__all__ = ["ApiKey", "FakeImport", "FakePennsieve", "Fault", "MotoCognito"]
