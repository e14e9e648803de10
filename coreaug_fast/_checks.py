"""The former name of :mod:`coreaug_fast.checks`, kept only while the selection modules move
into ``coreaug_fast/selection/`` (they import it by this name); remove it once they import
``checks``."""
from .checks import *  # noqa: F401,F403
