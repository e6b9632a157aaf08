"""Errors of the Pennsieve import: one clear line each, never a token or a secret."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..errors import Nwb2PennsieveError


def safe_url(url: str) -> str:
    """``url`` without its query string (a presigned URL's query is a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else parts.path


_URL_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str) -> str:
    """``text`` with the query string of every URL removed (presigned signatures, tokens)."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


class PennsieveError(Nwb2PennsieveError):
    """Pennsieve answered something the import cannot go on with."""


class PennsieveHTTPError(PennsieveError):
    """A call failed: ``status`` is the HTTP status (``None`` for a connection failure)."""

    def __init__(self, method: str, url: str, status: int | None, message: str = "") -> None:
        self.method = method
        self.url = safe_url(url)
        self.status = status
        what = f"HTTP {status}" if status is not None else "no answer"
        detail = f": {message[:300]}" if message else ""
        super().__init__(f"Pennsieve {method} {self.url} failed ({what}){detail}")

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


class PennsieveAuthError(PennsieveError):
    """No valid token could be obtained (bad key/secret, revoked refresh token, no credentials)."""


class TargetNotFoundError(PennsieveError):
    """Nothing says where to import (no integration id, dataset/package ids or S3 metadata)."""


class ChannelError(PennsieveError):
    """The output's channels cannot be matched to or created on the target package."""


class ImportBusyError(PennsieveError):
    """Another run holds the import's claim (it is preparing the same import): retry when it is done."""


class UploadError(PennsieveError):
    """Some files were not uploaded; ``failed`` lists them all. A rerun uploads only those."""

    def __init__(self, failed: list[str], total: int, *, first_reason: str = "") -> None:
        self.failed = sorted(failed)
        self.total = total
        self.first_reason = first_reason
        shown = ", ".join(self.failed[:5]) + (f" (+{len(self.failed) - 5} more)" if len(self.failed) > 5 else "")
        reason = f"; first error: {first_reason}" if first_reason else ""
        super().__init__(
            f"{len(self.failed)} of {total} files failed to upload: {shown}{reason};"
            " the list is in import-failed.json; rerun to upload only the missing files"
        )
