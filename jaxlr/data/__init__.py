"""TODO"""

from ._batch import TARGETS, AtomsBatch, Targets
from ._batching import BatchLoader, make_batches
from ._bundled import data_path, load_point_charges, load_charged_dimers, dimer_monomers
from ._dataset import Dataset, check_targets, species_indices, fit_offsets
from ._padding import Batch, pad_batch
from ._structures import Structure, structure_from_atoms, read_structures, detect_fragments, TARGET_SHAPES

__all__ = [
    "AtomsBatch",
    "Batch",
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
    "make_batches",
    "pad_batch",
    "read_structures",
    "species_indices",
    "structure_from_atoms",
]
