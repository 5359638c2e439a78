"""python -m txnatpmp: the natpmp command."""

from ._cli import entry_point

entry_point()
