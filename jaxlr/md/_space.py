"""The jax-md side of every energy function: boxes, coordinates and neighbour lists.

jax-md and jaxlr describe the same periodic box differently, and this module is the one
place that translates:

* jax-md's ``box`` (a scalar L, a vector (Lx, Ly, Lz) or an upper-triangular (3, 3)
  matrix) holds the lattice vectors as COLUMNS, ``x = box @ u``; jaxlr's ``cell`` holds
  them as ROWS (ASE): ``cell = box.T``.
* With ``space.periodic_general(box, fractional_coordinates=True)`` (jax-md's default)
  the positions are fractional, ``R_real = R @ box.T``.  The conversion goes through
  ``jax_md.space.transform``, whose derivative rule hands back gradients in real space,
  so ``-grad(energy_fn)(R_frac)`` are forces in eV/Å, as jax-md's integrators expect.
* ``perturbation`` (jax-md's strain for stress and pressure, a scalar or a (3, 3)
  matrix P acting on column displacements, ``d' = P d``) deforms positions and cell
  together: ``R' = R_real @ P.T``, ``cell' = cell @ P.T`` — so it reaches the real-space
  sum and the reciprocal (mesh) sum alike.
* jax-md ``Dense`` neighbour lists use the minimum image; :func:`jaxlr.system.from_jax_md`
  wraps them, and :class:`Geometry` additionally masks pairs beyond the real-space cutoff
  (a list built with a skin ``dr_threshold`` holds pairs up to cutoff + skin), so the
  energy depends on the positions only, not on when the list was last rebuilt.

Everything here checks on the host what it can (shapes, conventions, cutoff against box,
which neighbour function built a list, overflow of a concrete list) and raises a
``ValueError`` that says what to change; inside ``jit`` only the shapes are checked and the
overflow flag stays on the jax-md neighbour list (``nbrs.did_buffer_overflow``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..system import Neighbors, from_jax_md, is_concrete, pair_displacements, perpendicular_widths

__all__ = ["Geometry", "box_matrix", "cell_from_box", "check_box_for_cutoff", "host_box", "make_geometry", "real_positions", "validate_setup"]


def box_matrix(box, dtype=None):
    """jax-md box → (3, 3) matrix whose COLUMNS are the lattice vectors (jittable).

    Args:
      box: a scalar L (cube), a (3,) vector (orthorhombic) or a (3, 3) matrix (columns are
        lattice vectors, jax-md's convention).  dtype: optional dtype of the result.

    Returns:
      (3, 3) array.

    Example:
      >>> box_matrix(2.0).tolist()
      [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    """
    b = jnp.asarray(box, dtype=dtype)
    if b.ndim == 0 or b.size == 1:
        return jnp.eye(3, dtype=b.dtype) * jnp.reshape(b, ())
    if b.shape == (3,):
        return jnp.diag(b)
    if b.shape == (3, 3):
        return b
    raise ValueError(f"box must be a scalar, a (3,) vector or a (3, 3) matrix (columns are lattice vectors, "
                     f"jax-md's convention), got shape {b.shape}.")


def cell_from_box(box):
    """jaxlr cell (rows are lattice vectors) of a jax-md box (columns): ``box_matrix(box).T``.

    Example:
      >>> import numpy as np
      >>> box = np.array([[4.0, 1.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 6.0]])   # 2nd vector (1, 5, 0)
      >>> cell_from_box(box)[1].tolist()
      [1.0, 5.0, 0.0]
    """
    return box_matrix(box).T


def host_box(box) -> np.ndarray:
    if box is None:
        raise ValueError("box is None: pass the jax-md box (scalar, (3,) or (3, 3) with lattice vectors as "
                         "columns) for a periodic system.")
    if not is_concrete(box):
        raise ValueError("the box must be concrete (numbers, not a tracer) when the energy function is built.")
    b = np.asarray(box, dtype=np.float64)  # numpy only: under a jit trace every jnp op gives a tracer
    if b.ndim == 0 or b.size == 1:
        b = np.eye(3) * float(b.reshape(()))
    elif b.shape == (3,):
        b = np.diag(b)
    elif b.shape != (3, 3):
        raise ValueError(f"box must be a scalar, a (3,) vector or a (3, 3) matrix (columns are lattice vectors, "
                         f"jax-md's convention), got shape {b.shape}.")
    if not np.all(np.isfinite(b)):
        raise ValueError("box contains NaN or inf.")
    if abs(np.linalg.det(b)) < 1e-6 * np.prod(np.linalg.norm(b, axis=0)):
        raise ValueError(f"box {b.tolist()} is singular: its three columns (lattice vectors) must be "
                         "linearly independent.")
    if np.linalg.det(b) < 0:
        raise ValueError("box has a negative determinant (left-handed lattice vectors); jax-md's cell list "
                         "and fractional coordinates need a right-handed, upper-triangular box.")
    return b


def _probe_displacement(displacement_fn, box: np.ndarray | None, fractional: bool) -> None:
    """Check on the host that ``displacement_fn`` uses the same box and coordinates as declared."""
    def disp(a, b):
        return np.asarray(displacement_fn(jnp.asarray(a), jnp.asarray(b)), dtype=np.float64)

    if box is None:  # open boundary: a free-space displacement returns a - b
        a = np.array([7.3, -11.9, 23.7])
        d = disp(a, np.zeros(3))
        if not np.allclose(d, a, rtol=1e-5, atol=1e-5):
            raise ValueError("box=None means an open boundary, but displacement_fn is periodic (it wraps "
                             f"{a.tolist()} to {d.tolist()}); use jax_md.space.free() or pass the box.")
        return
    tol = dict(rtol=1e-5, atol=1e-5 * float(np.max(np.abs(box))))
    if fractional:
        u = np.array([0.1, 0.2, 0.3])
        d = disp(u, np.zeros(3))
        if np.allclose(d, box @ u, **tol):
            return
        if np.allclose(d, u, rtol=1e-5, atol=1e-6):
            raise ValueError("fractional_coordinates=True, but displacement_fn treats positions as Cartesian "
                             "(Å): build the space with jax_md.space.periodic_general(box, "
                             "fractional_coordinates=True), or pass fractional_coordinates=False.")
        raise ValueError(f"displacement_fn does not use this box: u = {u.tolist()} maps to {d.tolist()} "
                         f"instead of box @ u = {(box @ u).tolist()}.  Build the space and the energy with the "
                         "same box (jax-md: columns are lattice vectors).")
    for k in range(3):
        a = 0.7 * box[:, k]
        d = disp(a, np.zeros(3))
        if np.allclose(d, -0.3 * box[:, k], **tol):
            continue
        if np.allclose(d, box @ (a - np.round(a)), **tol):
            raise ValueError("fractional_coordinates=False, but displacement_fn treats positions as "
                             "fractional: build the space with jax_md.space.periodic_general(box, "
                             "fractional_coordinates=False), or pass fractional_coordinates=True.")
        if np.allclose(d, a, **tol):
            raise ValueError("displacement_fn is not periodic (free space?) but a box was given; use "
                             "jax_md.space.periodic_general(box, fractional_coordinates=...) or box=None.")
        raise ValueError(f"displacement_fn does not use this box: 0.7 × lattice vector {k} maps to {d.tolist()} "
                         f"instead of {(-0.3 * box[:, k]).tolist()} (minimum image).  Build the space and the "
                         "energy with the same box (jax-md: columns are lattice vectors).")


def _check_list_options(dr_threshold, capacity_multiplier, format) -> None:
    from jax_md import partition

    if format is not partition.Dense:
        raise ValueError(f"format={format!r}: jaxlr's real-space sums read a dense full neighbour list; pass "
                         "format=jax_md.partition.Dense (Sparse and OrderedSparse lists are not supported).")
    if not (np.isfinite(dr_threshold) and dr_threshold >= 0):
        raise ValueError(f"dr_threshold (the neighbour-list skin, Å) must be ≥ 0, got {dr_threshold!r}.")
    if not (np.isfinite(capacity_multiplier) and capacity_multiplier >= 1.0):
        raise ValueError(f"capacity_multiplier must be ≥ 1, got {capacity_multiplier!r}.")


def check_box_for_cutoff(box: np.ndarray, cutoff: float, dr_threshold: float, what: str) -> None:
    """Minimum image: cutoff + skin must not exceed half the smallest perpendicular width."""
    half = 0.5 * float(perpendicular_widths(box.T).min())
    if cutoff + dr_threshold > half * (1 + 1e-12):
        raise ValueError(f"{what} {cutoff:.4g} Å plus the skin dr_threshold={dr_threshold:g} Å exceeds half the "
                         f"smallest width of the box ({half:.4g} Å): jax-md lists use the minimum image. Use a "
                         "larger supercell, a smaller dr_threshold or a shorter cutoff.")


class Geometry:
    """Coordinates, box and neighbour-list bookkeeping shared by the energy functions (internal).

    Attributes:
      box: (3, 3) column box (jax array) or None (open boundary).  fractional: positions
      are fractional.  cutoff: real-space cutoff (Å) applied to every pair.  n_atoms: N.
      neighbor_fn: the jax-md ``NeighborListFns`` handed to the user.
    """

    def __init__(self, box, fractional, cutoff, n_atoms, neighbor_fn, known):
        self.box = box
        self.fractional = fractional
        self.cutoff = float(cutoff)
        self.n_atoms = n_atoms
        self.neighbor_fn = neighbor_fn
        self._known = known

    @property
    def periodic(self) -> bool:
        return self.box is not None

    def real(self, R, box=None, perturbation=None):
        """(R_real (N, 3) Å, cell (3, 3) rows or None) for jax-md positions ``R`` (jittable)."""
        R = jnp.asarray(R)
        if R.ndim != 2 or R.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3), got {R.shape}.")
        if self.n_atoms is not None and R.shape[0] != self.n_atoms:
            raise ValueError(f"positions hold {R.shape[0]} atoms, but the energy function was built for "
                             f"{self.n_atoms}.")
        if not self.periodic:
            if box is not None:
                raise ValueError("box= was passed to an open-boundary energy function.")
            if perturbation is not None:
                raise ValueError("perturbation= (strain) needs a periodic box.")
            return R, None
        b = self.box.astype(R.dtype) if box is None else box_matrix(box, R.dtype)
        if box is not None and is_concrete(box):
            host_box(box)
        if self.fractional:
            from jax_md import space

            concrete = np.asarray(R) if is_concrete(R) else None  # numpy: jnp ops under a trace give tracers
            if concrete is not None and concrete.size and (np.min(concrete) < -0.5 or np.max(concrete) > 1.5):
                raise ValueError("fractional_coordinates=True, but the positions lie outside [0, 1) (range "
                                 f"{float(np.min(concrete)):.3g} … {float(np.max(concrete)):.3g}); pass "
                                 "fractional positions (R_frac = R @ inv(box).T) or build the energy with "
                                 "fractional_coordinates=False.")
            R = space.transform(b, R)  # gradients come back in real space (jax-md's rule)
        cell = b.T
        if perturbation is not None:
            P = jnp.asarray(perturbation, R.dtype)
            if P.ndim == 0:
                P = P * jnp.eye(3, dtype=R.dtype)
            if P.shape != (3, 3):
                raise ValueError(f"perturbation must be a scalar or a (3, 3) matrix, got shape {P.shape}.")
            R = R @ P.T
            cell = cell @ P.T
        if is_concrete(cell):
            w = perpendicular_widths(np.asarray(cell, dtype=np.float64))
            if self.cutoff > 0.5 * w.min() * (1 + 1e-9):
                raise ValueError(f"the box has shrunk below twice the real-space cutoff {self.cutoff:.4g} Å "
                                 f"(half width {0.5 * w.min():.4g} Å): the minimum image misses pairs. "
                                 "Rebuild the energy function for this box.")
        return R, cell

    def neighbors(self, neighbor, R_real, cell) -> Neighbors:
        """Check a jax-md list and convert it to a cutoff-masked :class:`jaxlr.Neighbors` (jittable)."""
        from jax_md import partition

        if neighbor is None:
            raise ValueError("this energy function needs neighbor=: the jax-md list from neighbor_fn.allocate(R) "
                             "(and nbrs.update(R) as the atoms move).")
        if isinstance(neighbor, Neighbors):
            raise ValueError("pass the jax-md neighbour list (neighbor_fn.allocate(R)), not a jaxlr.Neighbors.")
        fmt = getattr(neighbor, "format", None)
        if fmt is None or not hasattr(neighbor, "idx"):
            raise ValueError(f"neighbor must be a jax-md NeighborList, got {type(neighbor).__name__}.")
        if fmt is not partition.Dense:
            raise ValueError(f"neighbour list format {fmt}: only jax_md.partition.Dense lists are supported "
                             "(use the neighbor_fn returned with this energy function).")
        if not any(neighbor.update_fn is f for f in self._known):
            raise ValueError("this neighbour list was not built by the neighbor_fn returned with this energy "
                             "function (another cutoff, box or coordinate convention?); allocate it with that "
                             "neighbor_fn: nbrs = neighbor_fn.allocate(R).")
        n = R_real.shape[0]
        if neighbor.idx.shape[0] != n:
            raise ValueError(f"the neighbour list has {neighbor.idx.shape[0]} rows for {n} atoms; reallocate it.")
        if is_concrete(neighbor.error.code):
            code = int(np.asarray(neighbor.error.code))   # numpy: jnp ops under a trace give tracers
            overflow_bits = int(partition.PartitionErrorCode.NEIGHBOR_LIST_OVERFLOW
                                | partition.PartitionErrorCode.CELL_LIST_OVERFLOW)
            if code & overflow_bits:
                raise ValueError("the neighbour list overflowed (more neighbours than its capacity), so pairs "
                                 "are missing: reallocate it, nbrs = neighbor_fn.allocate(R), and in a jitted "
                                 "loop check nbrs.did_buffer_overflow after every block of steps.")
            if code & int(partition.PartitionErrorCode.CELL_SIZE_TOO_SMALL):
                raise ValueError("the box grew/shrank so much that the neighbour list's cell list is too coarse; "
                                 "reallocate it with neighbor_fn.allocate(R, box=box).")
            # (neighbor.malformed_box is not read: jax-md 0.2.29 sets it for every VALID box,
            # ``err.update(MALFORMED_BOX, is_box_valid(box))``; the host checks the box instead)
        nbrs = from_jax_md(neighbor)
        d, _ = pair_displacements(jax.lax.stop_gradient(R_real), None if cell is None else
                                  jax.lax.stop_gradient(cell), jnp.arange(n), nbrs.idx, None)
        r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
        return Neighbors(idx=nbrs.idx, mask=nbrs.mask & (r2 < self.cutoff**2), shifts=None, overflow=nbrs.overflow)


def validate_setup(displacement_fn, box, *, fractional_coordinates: bool, dr_threshold: float,
                   capacity_multiplier: float, format) -> np.ndarray | None:
    """Host checks of a jax-md set-up before anything is tuned or compiled (internal).

    List options (Dense only, skin ≥ 0, capacity multiplier ≥ 1), the box (finite,
    right-handed, upper triangular with fractional coordinates) and a probe of
    ``displacement_fn`` (same box, same coordinate convention).  Returns the box as a
    (3, 3) numpy column matrix, or None for an open boundary.
    """
    _check_list_options(dr_threshold, capacity_multiplier, format)
    if box is None:
        if fractional_coordinates:
            raise ValueError("an open boundary (box=None) has no fractional coordinates; pass "
                             "fractional_coordinates=False with jax_md.space.free().")
        _probe_displacement(displacement_fn, None, False)
        return None
    b = host_box(box)
    if fractional_coordinates and not np.allclose(np.triu(b), b):
        raise ValueError("with fractional coordinates jax-md needs an upper-triangular box (columns are "
                         "lattice vectors: the first along x, the second in the xy plane); rotate the "
                         "cell, e.g. ase.Atoms.cell.standard_form(), and pass box = cell.T.")
    _probe_displacement(displacement_fn, b, fractional_coordinates)
    return b


def make_geometry(displacement_fn, box, *, cutoff: float, n_atoms, fractional_coordinates: bool,
                  dr_threshold: float, capacity_multiplier: float, format, what: str) -> Geometry:
    """Validate the jax-md set-up on the host and build the neighbour function (internal).

    Returns a :class:`Geometry` whose ``neighbor_fn`` is a jax-md ``Dense`` neighbour
    function with list cutoff ``cutoff`` (plus the skin ``dr_threshold``).
    """
    from jax_md import partition

    b = validate_setup(displacement_fn, box, fractional_coordinates=fractional_coordinates,
                       dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier, format=format)
    if b is None:
        box_jax = None
        # no cell list in free space: O(N²) candidates, fine for the molecules an open boundary means
        inner = partition.neighbor_list(displacement_fn, 1.0, float(cutoff), dr_threshold=float(dr_threshold),
                                        capacity_multiplier=float(capacity_multiplier), disable_cell_list=True,
                                        fractional_coordinates=False, format=partition.Dense)
    else:
        check_box_for_cutoff(b, float(cutoff), float(dr_threshold), what)
        box_jax = jnp.asarray(b)
        inner = partition.neighbor_list(displacement_fn, box, float(cutoff), dr_threshold=float(dr_threshold),
                                        capacity_multiplier=float(capacity_multiplier),
                                        fractional_coordinates=bool(fractional_coordinates), format=partition.Dense)
    known = []

    def allocate(position, extra_capacity: int = 0, **kwargs):
        nbrs = inner.allocate(position, extra_capacity=extra_capacity, **kwargs)
        if nbrs.cell_size is not None:
            # jax-md keeps the cell size as a jax array in a static (treedef) field; two
            # allocations then compare their treedefs with ``==`` on arrays, which fails
            # inside a trace (e.g. eval_shape in a jitted init_fn after a reallocation).
            # A Python float has the simple equality that static fields need.
            size = np.asarray(nbrs.cell_size)
            nbrs = nbrs.set(cell_size=float(size) if size.size == 1 else tuple(size.ravel().tolist()))
        if not any(nbrs.update_fn is f for f in known):
            known.append(nbrs.update_fn)
        return nbrs

    neighbor_fn = partition.NeighborListFns(allocate, inner.update)
    return Geometry(box_jax, bool(fractional_coordinates) and box is not None, cutoff, n_atoms, neighbor_fn, known)


def real_positions(R, box: np.ndarray | None, fractional: bool) -> np.ndarray:
    """Host positions in Å from jax-md positions (for tuning)."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[1] != 3:
        raise ValueError(f"positions_for_tuning must have shape (N, 3), got {R.shape}.")
    if not np.all(np.isfinite(R)):
        raise ValueError("positions_for_tuning contains NaN or inf.")
    return R @ box.T if (fractional and box is not None) else R
