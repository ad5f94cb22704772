"""BatchclsError, JobError(field, value, allowed), BackendUnavailable, SampleError."""

from __future__ import annotations


class BatchclsError(Exception):
    """An error a user can fix; printed as one line, exit status 2."""


class JobError(BatchclsError):
    """A job file that does not validate: names the file, the dotted field and what is allowed."""

    def __init__(self, field: str, message: str, *, path: str | None = None):
        self.field = field
        self.message = message
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{field}: {message}")

    def with_path(self, path: str) -> "JobError":
        return JobError(self.field, self.message, path=path)


class BackendUnavailable(BatchclsError):
    """A runtime or execution provider that is not installed on this host."""


class SampleError(Exception):
    """One input image that could not be turned into a model input; becomes an error row."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DeviceError(BatchclsError):
    """An accelerator that failed while running a batch: its worker is replaced and the shard redone."""
