"""Host-side data layer: structures, datasets and padded batches for training (numpy + ASE).

Everything here runs eagerly on the host (numpy); jax arrays appear only in the batches
handed to the models.  Units: Å, eV, e (stress eV/Å³ with ASE's sign, σ = (1/V) ∂E/∂ε;
dipole e·Å).  Cells are 3×3 with lattice vectors as rows; a structure is periodic along
all three axes when it has a cell and has an open boundary when it has none (slabs are
refused).

* :class:`Structure` — one validated structure with its reference targets.
* :func:`read_structures` / :class:`Dataset` — reading extended XYZ (via ASE, imported lazily)
  and simple dataset bookkeeping (splits, subsets, species, available targets).
* :class:`BatchLoader` / :func:`make_batches` — padding into :class:`jaxlr.models.inputs.AtomsBatch`
  and :class:`~jaxlr.models.inputs.Targets` with a bounded number of distinct shapes, so a
  jitted training step compiles only a few times.  Neighbour lists are built once per
  structure and reused every epoch.
* :func:`fit_offsets` — per-species energy offsets by least squares.
* :func:`detect_fragments` — molecules as connected components of covalent bonds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..models.inputs import TARGETS

__all__ = ["Structure", "Dataset", "BatchLoader", "read_structures", "structure_from_atoms", "check_targets",
           "species_indices", "fit_offsets", "make_batches", "detect_fragments", "TARGETS"]

#: trailing shape of each target (``"n"`` = number of atoms, ``"K"`` = any positive size)
TARGET_SHAPES = {
    "energy": (),
    "forces": ("n", 3),
    "stress": (3, 3),
    "charges": ("n",),
    "dipole": (3,),
    "coefficients": ("n", "K"),
}


def _symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` ("?" when unknown or ASE is missing)."""
    try:
        from ase.data import chemical_symbols
    except ImportError:  # pragma: no cover - ASE is an optional dependency
        return "?"
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def _float_array(name: str, value, shape: tuple | None = None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values.")
    arr.setflags(write=False)
    return arr


def _int_array(name: str, value, shape: tuple) -> np.ndarray:
    raw = np.asarray(value)
    if raw.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {raw.shape}.")
    if raw.size and not np.issubdtype(raw.dtype, np.integer):
        if not (np.issubdtype(raw.dtype, np.floating) and np.all(raw == np.round(raw))):
            raise ValueError(f"{name} must hold integers, got dtype {raw.dtype}.")
    arr = np.array(raw, dtype=np.int64, copy=True)
    arr.setflags(write=False)
    return arr


@dataclasses.dataclass(frozen=True)
class Structure:
    """One structure with its reference targets (host numpy, immutable; arrays are copied).

    Attributes:
      positions: (n, 3) Å.
      numbers: (n,) int atomic numbers (1 … 118).
      cell: (3, 3) Å, rows are lattice vectors (periodic in 3D), or None (open boundary).
      total_charge: net charge (e).
      fragments: (n,) int fragment label in [0, F) of each atom (e.g. the molecule), or None.
      fragment_charges: (F,) net charge of each fragment (e), summing to ``total_charge``;
        given together with ``fragments``.
      targets: reference values, keys from :data:`TARGETS`: ``energy`` () eV, ``forces``
        (n, 3) eV/Å, ``stress`` (3, 3) eV/Å³ (ASE sign, periodic only), ``charges`` (n,) e,
        ``dipole`` (3,) e·Å, ``coefficients`` (n, K) density coefficients.
      info: everything else (free-form metadata, e.g. ``distance``, ``label``).

    Raises:
      ValueError: wrong shapes, NaN/inf, unknown target names, a singular cell,
        fragments without fragment charges (or vice versa), fragment charges that do not
        add up to the total charge.

    Example:
      >>> import numpy as np
      >>> s = Structure(positions=np.zeros((1, 3)), numbers=np.array([1]), total_charge=1.0,
      ...               targets={"energy": -0.5})
      >>> s.n_atoms, s.periodic, float(s.targets["energy"])
      (1, False, -0.5)
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray | None = None
    total_charge: float = 0.0
    fragments: np.ndarray | None = None
    fragment_charges: np.ndarray | None = None
    targets: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        pos = np.asarray(self.positions)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (n, 3), got {pos.shape}.")
        n = pos.shape[0]
        set_ = object.__setattr__
        set_(self, "positions", _float_array("positions", pos, (n, 3)))
        numbers = _int_array("numbers", self.numbers, (n,))
        if n and (numbers.min() < 1 or numbers.max() > 118):
            raise ValueError(f"numbers must be atomic numbers in 1..118, got {sorted(set(numbers.tolist()))}.")
        set_(self, "numbers", numbers)
        if self.cell is not None:
            cell = _float_array("cell", self.cell, (3, 3))
            volume = abs(float(np.linalg.det(cell)))
            if not volume > 1e-6 * max(1.0, float(np.abs(cell).max()) ** 3):
                raise ValueError("cell is singular (zero volume); pass cell=None for an open boundary.")
            set_(self, "cell", cell)
        total = float(np.asarray(self.total_charge, dtype=np.float64))
        if not math.isfinite(total):
            raise ValueError(f"total_charge must be finite, got {self.total_charge}.")
        set_(self, "total_charge", total)
        if (self.fragments is None) != (self.fragment_charges is None):
            raise ValueError("fragments and fragment_charges go together: give both or neither.")
        if self.fragments is not None:
            frag = _int_array("fragments", self.fragments, (n,))
            fq = np.asarray(self.fragment_charges, dtype=np.float64)
            if fq.ndim != 1 or fq.size == 0:
                raise ValueError(f"fragment_charges must have shape (F,) with F ≥ 1, got {fq.shape}.")
            fq = _float_array("fragment_charges", fq, fq.shape)
            if n and (frag.min() < 0 or frag.max() >= fq.size):
                raise ValueError(f"fragments must be labels in [0, {fq.size}) (one charge per fragment), "
                                 f"got labels {sorted(set(frag.tolist()))}.")
            if abs(float(fq.sum()) - total) > 1e-6 * max(1.0, float(np.abs(fq).sum())):
                raise ValueError(f"fragment_charges sum to {float(fq.sum()):.6g} e but total_charge is "
                                 f"{total:.6g} e.")
            set_(self, "fragments", frag)
            set_(self, "fragment_charges", fq)
        targets = {}
        for key, value in dict(self.targets).items():
            if key not in TARGET_SHAPES:
                raise ValueError(f"unknown target {key!r}; targets are {TARGETS} (put other values in info).")
            arr = np.asarray(value, dtype=np.float64)
            if key == "stress" and arr.shape == (6,):
                arr = _voigt_to_full(arr)
            if key == "coefficients":
                if arr.ndim == 1 and n:
                    arr = arr.reshape(n, -1)
                if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] < 1:
                    raise ValueError(f"target 'coefficients' must have shape (n, K) = ({n}, K), got {arr.shape}.")
                expected = arr.shape
            else:
                expected = tuple(n if d == "n" else d for d in TARGET_SHAPES[key])
            targets[key] = _float_array(f"target {key!r}", arr, expected)
        if "stress" in targets and self.cell is None:
            raise ValueError("a stress target needs a periodic cell (the structure has an open boundary).")
        set_(self, "targets", targets)
        set_(self, "info", dict(self.info))

    @property
    def n_atoms(self) -> int:
        """Number of atoms n."""
        return int(self.positions.shape[0])

    @property
    def periodic(self) -> bool:
        """True when the structure has a cell (periodic in 3D)."""
        return self.cell is not None

    @property
    def n_fragments(self) -> int:
        """Number of fragments F (1 when the structure has no fragments)."""
        return 1 if self.fragment_charges is None else int(self.fragment_charges.size)

    def replace(self, **changes) -> "Structure":
        """A copy with some fields changed (validated again).

        Example:
          >>> import numpy as np
          >>> s = Structure(positions=np.zeros((1, 3)), numbers=np.array([8]))
          >>> s.replace(total_charge=-2.0).total_charge
          -2.0
        """
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        kind = "periodic" if self.periodic else "open"
        return (f"Structure(n_atoms={self.n_atoms}, {kind}, total_charge={self.total_charge:g}, "
                f"targets={sorted(self.targets)})")


def _voigt_to_full(v: np.ndarray) -> np.ndarray:
    """Voigt (xx, yy, zz, yz, xz, xy) → symmetric 3×3."""
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _lookup(atoms, results: dict, info_keys=(), array_keys=(), result_keys=()):
    for k in info_keys:
        if k in atoms.info:
            return atoms.info[k]
    for k in array_keys:
        if k in atoms.arrays:
            return atoms.arrays[k]
    for k in result_keys:
        if k in results:
            return results[k]
    return None


def structure_from_atoms(atoms, *, periodic: bool | None = None, total_charge_key: str = "total_charge",
                         index: int | None = None) -> Structure:
    """Convert one ``ase.Atoms`` (with optional calculator results) into a :class:`Structure`.

    See :func:`read_structures` for where each target is looked for.  ``index`` only
    improves error messages.

    Example:
      >>> from ase import Atoms
      >>> s = structure_from_atoms(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
      >>> s.n_atoms, s.cell is None
      (2, True)
    """
    where = f"structure {index}: " if index is not None else ""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if periodic is None:
        if pbc.any() and not pbc.all():
            raise ValueError(f"{where}partial periodicity pbc={pbc.tolist()} (slabs, wires) is not supported; "
                             "use a fully periodic cell or pass periodic=False for an open boundary.")
        periodic = bool(pbc.all())
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if periodic else None
    if periodic and abs(np.linalg.det(cell)) < 1e-9:
        raise ValueError(f"{where}periodic structure without a proper 3D cell; pass periodic=False for an "
                         "open boundary.")

    results = {}
    if atoms.calc is not None and getattr(atoms.calc, "results", None):
        results = dict(atoms.calc.results)
    info = dict(atoms.info)
    arrays = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    targets = {}
    lookups = {
        "energy": (("energy",), (), ("energy",)),
        "forces": ((), ("forces",), ("forces",)),
        "stress": (("stress",), (), ("stress",)),
        "charges": ((), ("charges", "charge"), ("charges",)),
        "dipole": (("dipole",), (), ("dipole",)),
        "coefficients": ((), ("coefficients",), ()),
    }
    for key, (ik, ak, rk) in lookups.items():
        value = _lookup(atoms, results, ik, ak, rk)
        if value is not None:
            targets[key] = np.asarray(value, dtype=np.float64)
        for k in ik:
            info.pop(k, None)
        for k in ak:
            arrays.pop(k, None)
    if "stress" in targets and not periodic:
        info["stress"] = targets.pop("stress")  # a container cell's stress is no target of an open boundary
    if "coefficients" in targets:
        targets["coefficients"] = targets["coefficients"].reshape(len(atoms), -1)

    if total_charge_key in info:
        total = float(info.pop(total_charge_key))
    elif "charge" in info:
        total = float(info.pop("charge"))
    elif "charges" in targets:
        total = float(np.sum(targets["charges"]))
    else:
        total = 0.0
    fragments = arrays.pop("fragments", None)
    fragment_charges = info.pop("fragment_charges", None)
    if fragment_charges is not None:
        fragment_charges = np.atleast_1d(np.asarray(fragment_charges, dtype=np.float64))
    for k, v in arrays.items():
        info.setdefault(k, np.array(v))
    try:
        return Structure(positions=atoms.positions, numbers=atoms.numbers, cell=cell, total_charge=total,
                         fragments=fragments, fragment_charges=fragment_charges, targets=targets, info=info)
    except ValueError as err:
        raise ValueError(f"{where}{err}") from None


_DECOMPRESS = {"gz": "gzip", "bz2": "bz2", "xz": "lzma"}


def read_structures(path, index=":", *, periodic: bool | None = None, total_charge_key: str = "total_charge",
                    format: str | None = None) -> list[Structure]:
    """Read structures from an extended XYZ file (also ``.xyz.gz``) with ``ase.io.read``.

    Where each value is taken from (info = comment line, arrays = per-atom columns,
    results = ASE's calculator, which ASE fills with known properties):

    - ``energy`` (eV): info ``energy`` or results; ``forces`` (eV/Å): arrays or results;
    - ``stress`` (eV/Å³, ASE sign): info or results, 3×3 or Voigt 6 (xx yy zz yz xz xy);
    - ``charges`` (e) per atom: arrays ``charges``/``charge`` or results; ``dipole`` (e·Å):
      info or results; ``coefficients``: arrays, reshaped to (n, K);
    - total charge (e): info ``total_charge_key``, else info ``charge``, else the sum of
      the per-atom charges, else 0;
    - fragments: arrays ``fragments`` and info ``fragment_charges``;
    - everything else in info (and unknown per-atom arrays) goes into ``Structure.info``.

    Args:
      path: file name.  index: ASE index string or int (``":"`` = all frames).
      periodic: None → periodic iff ``pbc`` is True along all three axes (partial pbc
        raises ``ValueError``: slabs are not supported); False → open boundary, the cell
        is dropped (files whose cell is only a container); True → use the cell whatever pbc.
      total_charge_key: info key holding the total charge.
      format: ASE format name (default: guessed from the file name).

    Returns:
      list of :class:`Structure`.

    Example:
      >>> # structures = read_structures("train.xyz")             # all frames
      >>> # dimers = read_structures("dimers.xyz", periodic=False)  # cell is a container
    """
    import ase.io

    path = str(path)
    opener = _DECOMPRESS.get(path.rsplit(".", 1)[-1].lower()) if "." in path else None
    stem = path.rsplit(".", 1)[0].lower()
    if opener is not None and (format in ("extxyz", "xyz") or (format is None and stem.endswith((".xyz", ".extxyz")))):
        # decompress into memory first: ASE seeks back and forth through the file, which
        # costs a full decompression per seek in a compressed stream (quadratic time)
        import importlib
        import io

        with importlib.import_module(opener).open(path, "rt") as handle:
            text = handle.read()
        frames = ase.io.read(io.StringIO(text), index=index, format=format or "extxyz")
    else:
        frames = ase.io.read(path, index=index, format=format)
    if not isinstance(frames, list):
        frames = [frames]
    return [structure_from_atoms(a, periodic=periodic, total_charge_key=total_charge_key, index=k)
            for k, a in enumerate(frames)]


# --------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------
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

    def available_targets(self) -> tuple[str, ...]:
        """Targets present in every structure, in the order of :data:`TARGETS`."""
        if not self.structures:
            return ()
        return tuple(t for t in TARGETS if all(t in s.targets for s in self.structures))

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


def check_targets(dataset, targets) -> None:
    """Raise ``ValueError`` unless every requested target is present in every structure.

    Args:
      dataset: :class:`Dataset` or sequence of :class:`Structure`.
      targets: names from :data:`TARGETS`.

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
    for t in targets:
        if t not in TARGET_SHAPES:
            raise ValueError(f"unknown target {t!r}; targets are {TARGETS}.")
        missing = [k for k, s in enumerate(dataset) if t not in s.targets]
        if missing:
            first = ", ".join(str(k) for k in missing[:5]) + (", ..." if len(missing) > 5 else "")
            present = tuple(x for x in TARGETS if all(x in s.targets for s in dataset))
            raise ValueError(f"target {t!r} is missing in {len(missing)} of {len(dataset)} structures "
                             f"(structure indices {first}); targets available in all structures: {present}. "
                             "Drop the target or filter the dataset (Dataset.subset).")


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
        names = ", ".join(f"{z} ({_symbol(z)})" for z in unknown)
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


# --------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------
def _round_up(x: int, m: int) -> int:
    return int(m * max(1, -(-int(x) // m)))


def _buckets(sizes: np.ndarray, max_shapes: int, batch_size: int) -> list[tuple[int, np.ndarray]]:
    """Group structure indices by size into ≤ ``max_shapes`` buckets of padded size N.

    Dynamic programming over the distinct padded sizes (multiples of 4) minimising the
    number of padded atom slots, counting whole batches (the last one padded).
    Returns ``[(N, indices sorted by dataset order), ...]`` from small to large N.
    """
    padded = np.array([_round_up(n, 4) for n in sizes], dtype=np.int64)
    values, counts = np.unique(padded, return_counts=True)
    d = len(values)
    cum = np.concatenate([[0], np.cumsum(counts)])
    k_max = max(1, min(max_shapes, d))
    inf = float("inf")
    # cost[k][j]: best cost for the first j distinct values in k buckets
    cost = [[inf] * (d + 1) for _ in range(k_max + 1)]
    back = [[0] * (d + 1) for _ in range(k_max + 1)]
    cost[0][0] = 0.0
    for k in range(1, k_max + 1):
        for j in range(1, d + 1):
            for i in range(j):
                if cost[k - 1][i] == inf:
                    continue
                m = cum[j] - cum[i]
                c = cost[k - 1][i] + math.ceil(m / batch_size) * batch_size * values[j - 1]
                if c < cost[k][j]:
                    cost[k][j], back[k][j] = c, i
    best_k = min(range(1, k_max + 1), key=lambda k: (cost[k][d], k))
    bounds = []
    j = d
    for k in range(best_k, 0, -1):
        i = back[k][j]
        bounds.append((i, j))
        j = i
    out = []
    for i, j in reversed(bounds):
        sel = np.nonzero((padded >= values[i]) & (padded <= values[j - 1]))[0]
        out.append((int(values[j - 1]), sel))
    return out


class BatchLoader:
    """Padded batches of a dataset with few distinct shapes; neighbour lists cached.

    Built once: validates the dataset (targets, species, periodicity), builds every
    structure's full neighbour list with :func:`jaxlr.neighbor_list` (on the unpadded
    structure, so padding atoms have no neighbours and are nobody's neighbour) and fixes
    the static sizes:

    - B = ``batch_size`` always (the last batch of each bucket is filled with padding
      structures, ``structure_mask = False``);
    - N from at most ``max_shapes`` size buckets (largest size of the bucket rounded up to
      a multiple of 4; batches never mix buckets);
    - M = one neighbour capacity for the dataset (largest count, rounded up to a multiple
      of 8, or ``capacity``);
    - F = one fragment count (largest over the dataset, at least 1, or ``n_fragments``).

    So a jitted step compiles at most ``len(loader.shapes)`` times.  Padding conventions
    are those of :class:`jaxlr.models.inputs.AtomsBatch`.

    Args:
      dataset: :class:`Dataset` or sequence of :class:`Structure` (all periodic or all open).
      species: the model's species (sorted atomic numbers); every atom must be one of them.
      cutoff: neighbour cutoff in Å.
      batch_size: structures per batch B.
      targets: names from :data:`TARGETS` to put in the :class:`Targets` (others None).
      n_fragments: fragment slots F (default: the largest over the dataset).
      dtype: floating dtype of the arrays (default: jax's default float).
      max_shapes: at most this many distinct padded atom counts N.
      capacity: neighbour slots M (default: the largest count rounded up to 8).

    Example:
      >>> # loader = BatchLoader(train, species=(1, 6, 7, 8), cutoff=5.0, batch_size=8,
      >>> #                      targets=("energy", "forces"))
      >>> # for epoch in range(100):
      >>> #     for atoms, targets in loader.epoch(seed=epoch):   # freshly shuffled
      >>> #         params, state = step(params, state, atoms, targets)
    """

    def __init__(self, dataset, species, *, cutoff: float, batch_size: int, targets=(),
                 n_fragments: int | None = None, dtype=None, max_shapes: int = 3,
                 capacity: int | None = None):
        import jaxlr

        structures = list(dataset)
        if not structures:
            raise ValueError("the dataset is empty.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if int(max_shapes) < 1:
            raise ValueError(f"max_shapes must be a positive integer, got {max_shapes}.")
        if not (np.isfinite(cutoff) and cutoff > 0):
            raise ValueError(f"cutoff must be a positive number of Å, got {cutoff}.")
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        check_targets(structures, targets)
        periodic = {s.periodic for s in structures}
        if len(periodic) > 1:
            first_open = next(k for k, s in enumerate(structures) if not s.periodic)
            raise ValueError(f"the dataset mixes periodic and open-boundary structures (e.g. structure "
                             f"{first_open} has no cell); a batch is either all periodic or all open.")
        self.periodic = periodic.pop()
        self.species = tuple(int(z) for z in species)
        if list(self.species) != sorted(set(self.species)):
            raise ValueError(f"species must be sorted unique atomic numbers, got {self.species}.")
        self.channels = [species_indices(s.numbers, self.species, structure=k) for k, s in enumerate(structures)]
        if "coefficients" in targets:
            ks = {s.targets["coefficients"].shape[1] for s in structures}
            if len(ks) > 1:
                raise ValueError(f"coefficient targets have different basis sizes K {sorted(ks)}.")
            self.n_coefficients = ks.pop()
        self.structures = structures
        self.targets = targets
        self.cutoff = float(cutoff)
        self.batch_size = int(batch_size)
        self.dtype = dtype

        needed_f = max(s.n_fragments for s in structures)
        if n_fragments is None:
            n_fragments = needed_f
        elif int(n_fragments) < needed_f:
            raise ValueError(f"n_fragments={n_fragments} is smaller than the largest fragment count "
                             f"{needed_f} in the dataset.")
        self.n_fragments = int(n_fragments)

        # neighbour lists once per structure, stored compactly (numpy)
        self._neighbors = []
        needed_m = 0
        for s in structures:
            nl = jaxlr.neighbor_list(s.positions, self.cutoff, s.cell)
            mask = np.asarray(nl.mask)
            count = int(mask.sum(axis=1).max(initial=0))
            needed_m = max(needed_m, count)
            idx = np.asarray(nl.idx)[:, :count]
            shifts = None if nl.shifts is None else np.asarray(nl.shifts)[:, :count]
            self._neighbors.append((idx, mask[:, :count], shifts))
        if capacity is None:
            capacity = _round_up(needed_m, 8)
        elif int(capacity) < needed_m:
            raise ValueError(f"capacity={capacity} is smaller than the largest neighbour count {needed_m}.")
        self.capacity = int(capacity)

        sizes = np.array([s.n_atoms for s in structures])
        self.buckets = _buckets(sizes, int(max_shapes), self.batch_size)

    # -- static sizes --------------------------------------------------------------------
    @property
    def shapes(self) -> set[tuple[int, int, int, int]]:
        """Distinct (B, N, M, F) of the batches (compilations of a jitted step)."""
        return {(self.batch_size, n, self.capacity, self.n_fragments) for n, _ in self.buckets}

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(-(-len(ix) // self.batch_size) for _, ix in self.buckets)

    # -- iteration -----------------------------------------------------------------------
    def batch_indices(self, seed: int | None = None) -> list[tuple[int, np.ndarray]]:
        """The plan of one epoch: ``[(N, (B,) dataset indices, −1 = padding structure), ...]``.

        ``seed=None``: buckets from small to large, dataset order inside each bucket.
        Otherwise structures are shuffled inside their bucket and the batches of all
        buckets are shuffled together (reproducible for a given seed).
        """
        rng = None if seed is None else np.random.default_rng(seed)
        plan = []
        for n, ix in self.buckets:
            ix = ix if rng is None else rng.permutation(ix)
            for start in range(0, len(ix), self.batch_size):
                chunk = ix[start:start + self.batch_size]
                full = np.full(self.batch_size, -1, dtype=np.int64)
                full[:len(chunk)] = chunk
                plan.append((n, full))
        if rng is not None:
            order = rng.permutation(len(plan))
            plan = [plan[k] for k in order]
        return plan

    def epoch(self, seed: int | None = None, *, with_indices: bool = False):
        """Yield ``(AtomsBatch, Targets)`` for one epoch (see :meth:`batch_indices`).

        With ``with_indices=True`` yields ``(AtomsBatch, Targets, indices)`` where
        ``indices`` (B,) are dataset indices (−1 for padding structures).
        """
        for n, indices in self.batch_indices(seed):
            atoms, targets = self.assemble(indices, n)
            yield (atoms, targets, indices) if with_indices else (atoms, targets)

    def __iter__(self):
        return self.epoch(None)

    def assemble(self, indices, n_atoms: int):
        """Build one padded batch from dataset ``indices`` (−1 = padding structure) with N = ``n_atoms``."""
        import jax.numpy as jnp

        from ..models.inputs import AtomsBatch, Targets
        from ..neighbors import Neighbors

        b, n, m, f = len(indices), int(n_atoms), self.capacity, self.n_fragments
        pos = np.zeros((b, n, 3))
        species = np.full((b, n), -1, dtype=np.int32)
        atom_mask = np.zeros((b, n), dtype=bool)
        structure_mask = np.zeros(b, dtype=bool)
        total = np.zeros(b)
        frags = np.full((b, n), -1, dtype=np.int32)
        fq = np.zeros((b, f))
        nb_idx = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None], (b, n, m)).copy()
        nb_mask = np.zeros((b, n, m), dtype=bool)
        nb_shifts = np.zeros((b, n, m, 3), dtype=np.int8) if self.periodic else None
        cells = np.zeros((b, 3, 3)) if self.periodic else None
        tg = {t: None for t in TARGETS}
        shapes = {"energy": (), "forces": (n, 3), "stress": (3, 3), "charges": (n,), "dipole": (3,),
                  "coefficients": (n, getattr(self, "n_coefficients", 0))}
        for t in self.targets:
            tg[t] = np.zeros((b,) + shapes[t])
        fallback_cell = None
        for k, i in enumerate(indices):
            if i < 0:
                continue
            s = self.structures[int(i)]
            na = s.n_atoms
            if na > n:
                raise ValueError(f"structure {i} has {na} atoms, more than the batch's N = {n}.")
            pos[k, :na] = s.positions
            species[k, :na] = self.channels[int(i)]
            atom_mask[k, :na] = True
            structure_mask[k] = True
            total[k] = s.total_charge
            if s.fragments is None:
                frags[k, :na] = 0
                fq[k, 0] = s.total_charge
            else:
                frags[k, :na] = s.fragments
                fq[k, :s.fragment_charges.size] = s.fragment_charges
            idx, mask, shifts = self._neighbors[int(i)]
            c = idx.shape[1]
            nb_idx[k, :na, :c] = np.where(mask, idx, np.arange(na, dtype=np.int32)[:, None])
            nb_mask[k, :na, :c] = mask
            if self.periodic:
                nb_shifts[k, :na, :c] = np.where(mask[..., None], shifts, 0)
                cells[k] = s.cell
                if fallback_cell is None:
                    fallback_cell = s.cell
            for t in self.targets:
                v = s.targets[t]
                if v.ndim and shapes[t] and shapes[t][0] == n:
                    tg[t][k, :na] = v
                else:
                    tg[t][k] = v
        if self.periodic:
            # padding structures get a valid cell so that model outputs stay finite
            for k in np.nonzero(~structure_mask)[0]:
                cells[k] = fallback_cell if fallback_cell is not None else np.eye(3)
        dt = self.dtype or jnp.zeros(()).dtype
        neighbors = Neighbors(idx=jnp.asarray(nb_idx), mask=jnp.asarray(nb_mask),
                              shifts=None if nb_shifts is None else jnp.asarray(nb_shifts),
                              overflow=jnp.zeros(b, dtype=bool))
        atoms = AtomsBatch(positions=jnp.asarray(pos, dt), species=jnp.asarray(species),
                           atom_mask=jnp.asarray(atom_mask), structure_mask=jnp.asarray(structure_mask),
                           total_charge=jnp.asarray(total, dt), fragments=jnp.asarray(frags),
                           fragment_charges=jnp.asarray(fq, dt), neighbors=neighbors,
                           cell=None if cells is None else jnp.asarray(cells, dt), field=None)
        targets = Targets(**{t: (None if v is None else jnp.asarray(v, dt)) for t, v in tg.items()})
        return atoms, targets


def make_batches(dataset, species, *, cutoff: float, batch_size: int, targets=(), shuffle: bool = False,
                 seed: int = 0, n_fragments: int | None = None, dtype=None, max_shapes: int = 3,
                 capacity: int | None = None) -> list:
    """Pad a dataset into a list of ``(AtomsBatch, Targets)`` (one epoch of a :class:`BatchLoader`).

    Args:
      dataset, species, cutoff, batch_size, targets, n_fragments, dtype, max_shapes,
        capacity: as :class:`BatchLoader`.
      shuffle: shuffle structures inside size buckets and the order of the batches.
      seed: seed of the shuffle.

    Returns:
      list of ``(AtomsBatch, Targets)`` pairs; at most ``max_shapes`` distinct shapes, B =
      ``batch_size`` always.  For many epochs build a :class:`BatchLoader` once instead
      (the neighbour lists are then computed only once).

    Example:
      >>> import numpy as np
      >>> s = Structure(positions=np.array([[0.0, 0, 0], [0, 0, 1.0]]), numbers=[1, 1],
      ...               targets={"energy": -1.0})
      >>> [(atoms, tg)] = make_batches(Dataset([s, s, s]), (1,), cutoff=2.0, batch_size=4,
      ...                              targets=("energy",))
      >>> atoms.positions.shape, atoms.structure_mask.tolist()
      ((4, 4, 3), [True, True, True, False])
    """
    loader = BatchLoader(dataset, species, cutoff=cutoff, batch_size=batch_size, targets=targets,
                         n_fragments=n_fragments, dtype=dtype, max_shapes=max_shapes, capacity=capacity)
    return list(loader.epoch(seed if shuffle else None))


# --------------------------------------------------------------------------------------
# fragments
# --------------------------------------------------------------------------------------
def detect_fragments(positions, numbers, *, scale: float = 1.2, cell=None) -> np.ndarray:
    """Molecules as connected components of covalent bonds (host).

    Atoms i and j are bonded when ``|R_i − R_j| < scale · (r_i + r_j)`` with ASE's
    covalent radii r (``ase.data.covalent_radii``, Å) — the criterion of ASE's
    ``natural_cutoffs(atoms, mult=scale)`` with a ``NeighborList``.  Components are
    labelled 0, 1, … in the order of their first atom.

    Args:
      positions: (n, 3) Å.  numbers: (n,) atomic numbers.
      scale: multiplier of the covalent radii.
      cell: (3, 3) for periodic structures (bonds across the boundary count), or None.

    Returns:
      (n,) int64 fragment labels.

    Example:
      >>> import numpy as np
      >>> pos = np.array([[0, 0, 0], [0, 0, 0.96], [5, 0, 0], [5, 0, 0.74]])
      >>> detect_fragments(pos, [8, 1, 1, 1]).tolist()
      [0, 0, 1, 1]
    """
    from ase.data import covalent_radii

    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(numbers, dtype=np.int64)
    n = len(z)
    if pos.shape != (n, 3):
        raise ValueError(f"positions must have shape ({n}, 3), got {pos.shape}.")
    radii = scale * np.asarray(covalent_radii)[z]
    if cell is None:
        d = np.sqrt(np.sum((pos[:, None, :] - pos[None, :, :]) ** 2, axis=-1))
        ii, jj = np.nonzero(d < radii[:, None] + radii[None, :])
    else:
        import jaxlr

        nl = jaxlr.neighbor_list(pos, 2.0 * float(radii.max(initial=0.0)) + 1e-6, cell)
        idx, mask = np.asarray(nl.idx), np.asarray(nl.mask)
        shifts = np.asarray(nl.shifts, dtype=np.float64)
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        dvec = pos[idx] - pos[rows] + shifts @ np.asarray(cell, dtype=np.float64)
        bonded = mask & (np.linalg.norm(dvec, axis=-1) < radii[rows] + radii[idx])
        ii, jj = rows[bonded], idx[bonded]
    parent = np.arange(n)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(ii.tolist(), jj.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(a) for a in range(n)]
    first = {}
    for r in roots:  # a component's label is the order of its first atom
        first.setdefault(r, len(first))
    labels = np.array([first[r] for r in roots], dtype=np.int64)
    return labels
