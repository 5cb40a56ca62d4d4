"""TODO"""

from ._cell import cell_volume, perpendicular_widths, reduced_basis, fft_friendly
from ._checks import is_concrete, concrete_value, check_accuracy, concrete_or_none, check_positions, check_per_atom, check_cell
from ._neighbors import Neighbors, neighbor_list, with_capacity, from_jax_md, pair_displacements

__all__ = [
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
    "neighbor_list",
    "pair_displacements",
    "perpendicular_widths",
    "reduced_basis",
    "with_capacity",
]
