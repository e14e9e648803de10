"""Triton kernels of coreaug_fast, installed as ``coreaug_fast.kernels`` (``setup.py`` maps
this top-level folder there with ``package_dir``, so ``from ..vocabulary import ...`` here
reads ``coreaug_fast/vocabulary.py``).

Each module holds one kernel family and its launcher, named after its op
(``facility_location.py``; ``distances.py``, the cost matrices it reads); the launchers
are the only names the rest of the package imports. On a machine without a GPU, set
``TRITON_INTERPRET=1`` before importing to run them (slowly) on CPU tensors.
"""
