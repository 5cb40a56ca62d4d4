"""Host preparation (numpy, eager, never jitted): input checks, cell geometry, neighbour lists.

Everything that fixes an array shape is decided here and handed on as Python ints and
tuples: :func:`neighbor_list` (vesin) builds full padded :class:`Neighbors` lists,
:func:`check_positions` & co. raise a :class:`ValueError` that says what to change before
anything is compiled.
"""

from ._cell import cell_volume, fft_friendly, perpendicular_widths, reduced_basis
from ._checks import (
    check_accuracy,
    check_cell,
    check_per_atom,
    check_positions,
    concrete_or_none,
    concrete_value,
    is_concrete,
)
from ._neighbors import Neighbors, from_jax_md, neighbor_list, pair_displacements, with_capacity
from ._shells import MK_RADII, merz_kollman_points

__all__ = [
    "MK_RADII",
    "Neighbors",
    "cell_volume",
    "check_accuracy",
    "check_cell",
    "check_per_atom",
    "check_positions",
    "concrete_or_none",
    "concrete_value",
    "fft_friendly",
    "from_jax_md",
    "is_concrete",
    "merz_kollman_points",
    "neighbor_list",
    "pair_displacements",
    "perpendicular_widths",
    "reduced_basis",
    "with_capacity",
]
