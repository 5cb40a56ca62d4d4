"""Datasets of structures: bookkeeping, target checks, species and energy offsets (host, numpy).

:class:`Dataset` is a list of :class:`~jaxlr.data.Structure` with splits,
subsets, species and available targets; :func:`check_targets` and
:func:`species_indices` validate a dataset against a model; :func:`fit_offsets` gives
per-species energy offsets by least squares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ._batch import TARGETS
from ._structures import TARGET_SHAPES, Structure, chemical_symbol, read_structures

__all__ = ["Dataset", "check_targets", "species_indices", "fit_offsets"]


class Dataset(Sequence):
    """A list of :class:`Structure` with dataset bookkeeping (host).

    ``ds[i]`` is a :class:`Structure`; ``ds[a:b]``, ``ds[[0, 4, 7]]`` or ``ds[bool_mask]``
    are new datasets (structures are shared, they are immutable).

    Example:
      >>> import numpy as np
      >>> ds = Dataset([Structure(positions=np.zeros((1, 3)), numbers=[z], targets={"energy": 0.0})
      ...               for z in (1, 8, 1)])
      >>> len(ds), ds.species, ds.available_targets()
      (3, (1, 8), ('energy',))
      >>> train, valid = ds.split((0.67, 0.33))
      >>> len(train), len(valid)
      (2, 1)
    """

    def __init__(self, structures=()):
        structures = list(structures)
        for k, s in enumerate(structures):
            if not isinstance(s, Structure):
                raise ValueError(f"element {k} is a {type(s).__name__}, not a Structure.")
        self.structures = structures

    @classmethod
    def from_file(cls, path, **kwargs) -> "Dataset":
        """Read a file with :func:`read_structures` (same keyword arguments).

        Example:
          >>> # ds = Dataset.from_file("train.xyz", periodic=False)
        """
        return cls(read_structures(path, **kwargs))

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, item):
        if isinstance(item, (int, np.integer)):
            return self.structures[int(item)]
        if isinstance(item, slice):
            return Dataset(self.structures[item])
        idx = np.asarray(item)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"a boolean index must have shape ({len(self)},), got {idx.shape}.")
            idx = np.nonzero(idx)[0]
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"cannot index a Dataset with {type(item).__name__} of dtype {idx.dtype}.")
        return Dataset([self.structures[int(i)] for i in idx.ravel()])

    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def __add__(self, other: "Dataset") -> "Dataset":
        return Dataset(self.structures + list(other))

    def __repr__(self) -> str:
        return (f"Dataset({len(self)} structures, species={self.species}, "
                f"targets={self.available_targets()})")

    @property
    def species(self) -> tuple[int, ...]:
        """Sorted unique atomic numbers of all structures."""
        if not self.structures:
            return ()
        return tuple(int(z) for z in np.unique(np.concatenate([s.numbers for s in self.structures])))

    @property
    def periodic(self) -> bool | None:
        """True if every structure is periodic, False if none is, None when mixed (or empty)."""
        flags = {s.periodic for s in self.structures}
        return flags.pop() if len(flags) == 1 else None

    def available_targets(self, *, every: bool = True) -> tuple[str, ...]:
        """Targets present in every structure (``every=False``: in at least one), in the
        order of :data:`TARGETS`.

        Example:
          >>> import numpy as np
          >>> mk = lambda tg: Structure(positions=np.zeros((1, 3)), numbers=[1], targets=tg)
          >>> ds = Dataset([mk({"energy": 0.0, "charges": [0.0]}), mk({"charges": [0.1]})])
          >>> ds.available_targets(), ds.available_targets(every=False)
          (('charges',), ('energy', 'charges'))
        """
        if not self.structures:
            return ()
        test = all if every else any
        return tuple(t for t in TARGETS if test(t in s.targets for s in self.structures))

    def split(self, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> tuple["Dataset", ...]:
        """Random disjoint split (reproducible for a given ``seed``).

        Args:
          fractions: positive fractions summing to at most 1 (what is left over is dropped);
            part sizes are rounded from the cumulative fractions.
          seed: seed of the permutation.

        Returns:
          one :class:`Dataset` per fraction.

        Example:
          >>> import numpy as np
          >>> ds = Dataset([Structure(positions=np.zeros((1, 3)), numbers=[1]) for _ in range(10)])
          >>> [len(d) for d in ds.split((0.8, 0.1, 0.1))]
          [8, 1, 1]
        """
        fr = np.asarray(fractions, dtype=np.float64)
        if fr.ndim != 1 or fr.size == 0 or np.any(fr < 0) or fr.sum() > 1 + 1e-9:
            raise ValueError(f"fractions must be non-negative and sum to at most 1, got {tuple(fractions)}.")
        n = len(self)
        perm = np.random.default_rng(seed).permutation(n)
        bounds = np.rint(np.concatenate([[0.0], np.cumsum(fr)]) * n).astype(int)
        bounds = np.minimum(bounds, n)
        return tuple(self[perm[bounds[k]:bounds[k + 1]]] for k in range(fr.size))

    def subset(self, predicate: Callable[[Structure], bool]) -> "Dataset":
        """Structures for which ``predicate(structure)`` is true.

        Example:
          >>> # short = ds.subset(lambda s: s.info["distance"] < 6.0)
        """
        return Dataset([s for s in self.structures if predicate(s)])


def check_targets(dataset, targets, *, indices=None, use: str = "evaluate") -> None:
    """Raise ``ValueError`` unless every requested target is present in every structure.

    The message names how many structures lack a target and the first few of them, and
    what to do: drop those structures, or stop asking for the target.

    Args:
      dataset: :class:`Dataset` or sequence of :class:`Structure`.
      targets: names from :data:`TARGETS`.
      indices: (len(dataset),) numbers that name the structures in the message (e.g. the
        frames of the file a split came from); default 0 … n − 1.
      use: what the targets are for, in the advice: ``"evaluate"`` (remove the target from
        the evaluated ones) or ``"train"`` (remove it from the loss weights).

    Example:
      >>> import numpy as np
      >>> ds = Dataset([Structure(positions=np.zeros((1, 3)), numbers=[1], targets={"energy": 0.0})])
      >>> check_targets(ds, ["energy"])          # fine
      >>> try:
      ...     check_targets(ds, ["forces"])
      ... except ValueError as err:
      ...     print(str(err).split(" (")[0])
      target 'forces' is missing in 1 of 1 structures
    """
    if isinstance(targets, str):
        targets = (targets,)
    if use not in ("evaluate", "train"):
        raise ValueError(f"use must be 'evaluate' or 'train', got {use!r}.")
    structures = list(dataset)
    if indices is None:
        indices = range(len(structures))
    indices = [int(k) for k in indices]
    if len(indices) != len(structures):
        raise ValueError(f"indices must name each of the {len(structures)} structures, got {len(indices)}.")
    for t in targets:
        if t not in TARGET_SHAPES:
            raise ValueError(f"unknown target {t!r}; targets are {TARGETS}.")
        missing = [k for k, s in zip(indices, structures) if t not in s.targets]
        if missing:
            first = ", ".join(str(k) for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
            present = tuple(x for x in TARGETS if all(x in s.targets for s in structures))
            drop = (f"drop these structures (e.g. dataset.subset(lambda s: {t!r} in s.targets), or remove "
                    "them from the file)")
            stop = (f"remove {t!r} from the loss weights (weight 0, or weights without it)" if use == "train"
                    else f"do not request {t!r}")
            raise ValueError(f"target {t!r} is missing in {len(missing)} of {len(structures)} structures "
                             f"(structure indices {first}); targets available in all structures: {present}. "
                             f"Either {drop}, or {stop}.")


def species_indices(numbers, species, *, structure: int | None = None) -> np.ndarray:
    """Map atomic numbers to channel indices in ``species`` (sorted atomic numbers).

    Args:
      numbers: (n,) atomic numbers.  species: the model's species (atomic numbers).
      structure: index of the structure, only used in the error message.

    Returns:
      (n,) int32 array of indices into ``species``.

    Raises:
      ValueError: naming the atomic numbers that ``species`` does not contain.

    Example:
      >>> species_indices([1, 6, 1], (1, 6)).tolist()
      [0, 1, 0]
    """
    numbers = np.asarray(numbers, dtype=np.int64).ravel()
    sp = np.asarray(tuple(int(z) for z in species), dtype=np.int64)
    lookup = {int(z): k for k, z in enumerate(sp)}
    unknown = sorted(set(numbers.tolist()) - set(lookup))
    if unknown:
        who = f"structure {structure} contains" if structure is not None else "the structure contains"
        names = ", ".join(f"{z} ({chemical_symbol(z)})" for z in unknown)
        noun = "atomic number" if len(unknown) == 1 else "atomic numbers"
        raise ValueError(f"{who} {noun} {names}, which the model's species {tuple(sp.tolist())} do not "
                         "include; add them to the species list or remove these structures.")
    return np.array([lookup[int(z)] for z in numbers], dtype=np.int32)


def fit_offsets(dataset, species, *, key: str = "energy", ridge: float = 1e-8) -> np.ndarray:
    """Per-species offsets e_s (eV) with E ≈ Σ_s n_s e_s, by least squares.

    Least squares for A e ≈ E (A = (n_structures, S) species count matrix) with a tiny
    ridge that makes collinear compositions (e.g. all structures with the same
    stoichiometry) well defined: along such directions the offsets are the minimum-norm
    solution.  A few passes of iterated Tikhonov regularisation (refitting the residual)
    remove the ridge's bias elsewhere, so exactly additive energies are recovered to
    float64 round-off.

    Args:
      dataset: :class:`Dataset` (or sequence of structures) with the scalar target ``key``.
      species: atomic numbers of the channels (every atom must be one of them).
      key: scalar target name.  ridge: Tikhonov weight (eV⁻² scale, absolute).

    Returns:
      (S,) float64 offsets in eV per atom, in the order of ``species``.

    Example:
      >>> import numpy as np
      >>> mk = lambda zs, e: Structure(positions=np.zeros((len(zs), 3)) + np.arange(len(zs))[:, None],
      ...                              numbers=zs, targets={"energy": e})
      >>> ds = Dataset([mk([1, 1], -2.0), mk([1, 8], -11.0), mk([8], -10.0)])
      >>> np.round(fit_offsets(ds, (1, 8)), 6).tolist()
      [-1.0, -10.0]
    """
    check_targets(dataset, [key])
    sp = tuple(int(z) for z in species)
    n_struct = len(dataset)
    if n_struct == 0:
        raise ValueError("fit_offsets needs at least one structure.")
    counts = np.zeros((n_struct, len(sp)))
    values = np.zeros(n_struct)
    for k, s in enumerate(dataset):
        idx = species_indices(s.numbers, sp, structure=k)
        counts[k] = np.bincount(idx, minlength=len(sp))
        v = np.asarray(s.targets[key], dtype=np.float64)
        if v.shape != ():
            raise ValueError(f"fit_offsets needs a scalar target; {key!r} has shape {v.shape}.")
        values[k] = float(v)
    if not ridge > 0:
        raise ValueError(f"ridge must be positive, got {ridge}.")
    # iterated Tikhonov: each pass solves min ‖A δ − r‖² + ridge ‖δ‖² for the residual r,
    # which removes the ridge's bias on well-determined combinations (factor ridge/λ per
    # pass) while exactly collinear directions stay at the minimum-norm solution
    a = np.concatenate([counts, math.sqrt(ridge) * np.eye(len(sp))])
    offsets = np.zeros(len(sp))
    for _ in range(4):
        residual = np.concatenate([values - counts @ offsets, np.zeros(len(sp))])
        offsets = offsets + np.linalg.lstsq(a, residual, rcond=None)[0]
    return offsets

