"""Host-side data layer: structures, datasets and padded batches for training (numpy + ASE).

Everything runs eagerly on the host (numpy); jax arrays appear only in the batches handed
to the models.  The layer lives in three modules, one concept each, and this module
re-exports their public names (``from jaxlr.train.data import X`` keeps working):

* :mod:`jaxlr.train.structures` — :class:`Structure` (one validated structure with its
  reference targets), :func:`structure_from_atoms` / :func:`read_structures` (extended XYZ
  via ASE) and :func:`detect_fragments` (molecules as connected components of covalent bonds).
* :mod:`jaxlr.train.dataset` — :class:`Dataset` (splits, subsets, species, available
  targets), :func:`check_targets`, :func:`species_indices` and :func:`fit_offsets`
  (per-species energy offsets by least squares).
* :mod:`jaxlr.train.batching` — :class:`BatchLoader` / :func:`make_batches`: padding into
  :class:`jaxlr.models.inputs.AtomsBatch` and :class:`~jaxlr.models.inputs.Targets` with a
  bounded number of distinct shapes, neighbour lists built once per structure.
"""

from __future__ import annotations

from ..models.inputs import TARGETS
from .batching import BatchLoader, make_batches
from .dataset import Dataset, check_targets, fit_offsets, species_indices
from .structures import Structure, detect_fragments, read_structures, structure_from_atoms

__all__ = ["Structure", "Dataset", "BatchLoader", "read_structures", "structure_from_atoms", "check_targets",
           "species_indices", "fit_offsets", "make_batches", "detect_fragments", "TARGETS"]
