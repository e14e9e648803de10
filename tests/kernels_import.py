"""Imports coreaug_fast.kernels after conftest has chosen compiled or interpreted Triton."""
from coreaug_fast.kernels import distances  # noqa: F401
