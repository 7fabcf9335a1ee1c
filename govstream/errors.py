"""Errors the CLI turns into a one-line message and an exit status."""


class GovstreamError(Exception):
    """An expected failure: printed as one line, no traceback."""

    exit_code = 1


class UsageError(GovstreamError):
    """Bad input from the user (arguments, files, events)."""

    exit_code = 2
