"""Instructor tooling: the judge hidden tests call, the grading pipeline and its CLI."""
