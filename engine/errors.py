"""The LazarusError hierarchy: one clear message per failure.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``:
2 for bad input, 3 for a model that cannot be loaded, 1 for an analysis failure or an output
that could not be written, 130 when interrupted. docs/errors.md lists them.
"""

from __future__ import annotations


class LazarusError(Exception):
    exit_code = 1


class InputError(LazarusError):
    """The user asked for something invalid (bad flag value, empty prompt, layer out of range)."""

    exit_code = 2


class ModelLoadError(LazarusError):
    """A model could not be found, fetched, verified or loaded."""

    exit_code = 3


class UnsupportedArchitecture(ModelLoadError):
    pass


class ChecksumMismatch(ModelLoadError):
    pass


class Cancelled(LazarusError):
    """A job was cancelled cooperatively."""

    exit_code = 130


class AnalysisError(LazarusError):
    exit_code = 1


class OutputError(LazarusError):
    """A result could not be written on the way (a full disk, an I/O error, stdout closed or full).

    A path that cannot take a file at all (a directory, a read-only or missing directory) is an
    InputError instead, and is refused before the run (``engine.fileio.check_output``)."""

    exit_code = 1
