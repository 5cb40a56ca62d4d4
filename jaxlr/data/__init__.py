"""Host data layer: structures, datasets, padded batches and the bundled data sets (numpy + ASE).

:class:`Structure` / :func:`read_structures` (extended XYZ via ASE, loaded lazily),
:class:`Dataset`, :class:`BatchLoader` / :func:`make_batches` padding into the one model
input :class:`AtomsBatch` with :class:`Targets`, :func:`pad_batch` for the functional
layer, and the bundled sets (:func:`load_point_charges`, :func:`load_charged_dimers`,
:func:`load_water_clusters`, :func:`water_cluster_splits`, :func:`load_water_transfer`, :func:`load_water_periodic`,
:func:`load_water_response`, :func:`load_water_esp`).
"""

from ._batch import TARGETS, AtomsBatch, Targets
from ._batching import BatchLoader, make_batches
from ._bundled import data_path, dimer_monomers, load_charged_dimers, load_point_charges
from ._dataset import Dataset, check_targets, fit_offsets, species_indices
from ._padding import far_padding, pad_atoms, pad_batch, pad_neighbors
from ._structures import TARGET_SHAPES, Structure, detect_fragments, read_structures, structure_from_atoms
from ._water import (
    load_water_clusters,
    load_water_transfer,
    mean_coefficients,
    reference_basis,
    reference_basis_widths,
    water_cluster_splits,
)
from ._water_esp import load_water_esp, water_esp_provenance
from ._water_periodic import load_water_periodic
from ._water_response import load_water_response

__all__ = [
    "AtomsBatch",
    "BatchLoader",
    "Dataset",
    "Structure",
    "TARGETS",
    "TARGET_SHAPES",
    "Targets",
    "check_targets",
    "data_path",
    "detect_fragments",
    "dimer_monomers",
    "fit_offsets",
    "load_charged_dimers",
    "load_point_charges",
    "load_water_clusters",
    "load_water_esp",
    "load_water_response",
    "load_water_periodic",
    "load_water_transfer",
    "make_batches",
    "mean_coefficients",
    "far_padding",
    "pad_atoms",
    "pad_batch",
    "pad_neighbors",
    "read_structures",
    "reference_basis",
    "reference_basis_widths",
    "species_indices",
    "structure_from_atoms",
    "water_cluster_splits",
    "water_esp_provenance",
]
