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
