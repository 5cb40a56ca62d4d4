"""One structure and reading files: :class:`Structure`, extended XYZ, fragments (numpy + ASE).

Everything here runs eagerly on the host (numpy).  Units: Å, eV, e (stress eV/Å³ with
ASE's sign, σ = (1/V) ∂E/∂ε; dipole e·Å).  Cells are 3×3 with lattice vectors as rows; a
structure is periodic along all three axes when it has a cell and has an open boundary
when it has none (slabs are refused).  :func:`read_structures` reads extended XYZ via ASE
(imported lazily); :func:`detect_fragments` finds molecules as connected components of
covalent bonds.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._batch import TARGETS

__all__ = ["Structure", "structure_from_atoms", "read_structures", "detect_fragments", "TARGET_SHAPES"]

#: trailing shape of each target (``"n"`` = number of atoms, ``"K"`` = any positive size)
TARGET_SHAPES = {
    "energy": (),
    "forces": ("n", 3),
    "stress": (3, 3),
    "charges": ("n",),
    "dipole": (3,),
    "coefficients": ("n", "K"),
}


def chemical_symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` ("?" when unknown or ASE is missing)."""
    try:
        from ase.data import chemical_symbols
    except ImportError:  # pragma: no cover - ASE is an optional dependency
        return "?"
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else "?"


def _unknown_symbol(symbol: str, where: str) -> ValueError:
    """The error for a string that is no chemical symbol (with the closest real symbols)."""
    import difflib

    try:
        from ase.data import chemical_symbols
    except ImportError:  # pragma: no cover - ASE is an optional dependency
        chemical_symbols = []
    known = chemical_symbols[1:]
    close = [symbol.capitalize()] if symbol.capitalize() in known else []   # 'CL' → 'Cl'
    close += [c for c in difflib.get_close_matches(symbol, known, n=3, cutoff=0.5) if c not in close]
    close = close[:3]
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ValueError(f"{where}unknown chemical symbol {symbol!r}{hint}; symbols are case-sensitive "
                      "('H', 'He', ..., 'Og'). Fix the symbol or remove the structure.")


def _atomic_numbers(value, n: int) -> np.ndarray:
    """(n,) atomic numbers from integers or chemical symbols ("O", "H", ...)."""
    raw = np.asarray(value)
    if raw.shape == (n,) and raw.size and (raw.dtype.kind in "US" or raw.dtype == object):
        if not all(isinstance(x, str) for x in raw.tolist()):
            raise ValueError("numbers must hold atomic numbers or chemical symbols, not a mix of both.")
        try:
            from ase.data import atomic_numbers
        except ImportError:  # pragma: no cover - ASE is an optional dependency
            raise ValueError("chemical symbols in numbers need ASE (pip install ase); "
                             "pass atomic numbers instead.") from None
        out = []
        for k, sym in enumerate(raw.tolist()):
            z = atomic_numbers.get(sym, 0)
            if z == 0:  # "X" (ASE's dummy atom) is no element either
                raise _unknown_symbol(sym, f"numbers[{k}]: ")
            out.append(z)
        return np.array(out, dtype=np.int64)
    return raw


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
      numbers: (n,) int atomic numbers (1 … 118); chemical symbols (``["O", "H", "H"]``)
        are converted (an unknown symbol raises ``ValueError`` naming it).
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
      ValueError: wrong shapes, NaN/inf, unknown chemical symbols or target names, a singular cell,
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
        numbers = _int_array("numbers", _atomic_numbers(self.numbers, n), (n,))
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

    Raises:
      ValueError: partial periodicity, invalid values (naming the structure), an unknown
        chemical symbol (naming the symbol and the 0-based frame of the file).

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
        source, format = (lambda: io.StringIO(text)), format or "extxyz"
    else:
        source = lambda: path  # noqa: E731
    try:
        frames = ase.io.read(source(), index=index, format=format)
    except KeyError as err:
        # ASE turns symbols into numbers with a dict lookup: an unknown symbol is a bare KeyError
        symbol = err.args[0] if len(err.args) == 1 else None
        if not isinstance(symbol, str) or _is_symbol(symbol):
            raise
        frame = _first_failing_frame(source, format)
        where = f"{path!r}" + (f", frame {frame} (0-based)" if frame is not None else "")
        raise _unknown_symbol(symbol, f"{where}: ") from None
    if not isinstance(frames, list):
        frames = [frames]
    return [structure_from_atoms(a, periodic=periodic, total_charge_key=total_charge_key, index=k)
            for k, a in enumerate(frames)]


def _is_symbol(symbol: str) -> bool:
    from ase.data import atomic_numbers

    return atomic_numbers.get(symbol, 0) > 0


def _first_failing_frame(source, format) -> int | None:
    """Index of the first frame that ASE cannot read (None if all are read this time)."""
    import ase.io

    k = 0
    try:
        for _ in ase.io.iread(source(), index=":", format=format):
            k += 1
    except Exception:  # noqa: BLE001 - any failure marks the frame
        return k
    return None




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
        from ..system._neighbors import neighbor_list

        nl = neighbor_list(pos, 2.0 * float(radii.max(initial=0.0)) + 1e-6, cell)
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
