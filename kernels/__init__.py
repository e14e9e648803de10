"""Triton kernels of coreaug_fast, installed as ``coreaug_fast.kernels``.

Each module holds one kernel family and its launcher; the launchers are the only names
the rest of the package imports. On a machine without a GPU, set ``TRITON_INTERPRET=1``
before importing to run them (slowly) on CPU tensors.
"""
