"""Instructor side: lesson source notebooks and the reference ("solution") kernels."""
