"""Errors the harness reports to a person as one line (the CLI prints them and exits 2)."""

from __future__ import annotations


class LMError(Exception):
    """A problem with the user's input (a flag, a file, a model class), not a bug."""


class CorpusError(LMError):
    pass


class CheckpointError(LMError):
    pass


class PresetError(LMError):
    pass


class ModelSpecError(LMError):
    pass


class SamplingError(LMError, ValueError):
    """A sampling option out of range (a ValueError for Python callers, one line on the CLI)."""


class TrainingDiverged(LMError):  # noqa: N818 - names what happened, like StopTraining
    """Training met a non-finite loss, gradient, weight or validation loss and stopped; the last
    checkpoint it saved (if any) is the last good one."""
