"""Host-side validation of user inputs (numpy, eager, never jitted).

Every front door calls these helpers before anything is compiled, so bad input
raises a :class:`ValueError` that says what to change instead of producing NaN
or a silent wrong answer.  Inputs may also be JAX tracers (when a front door is
called under ``jax.grad`` or ``jax.jit``): then only their shapes are checked,
value checks need concrete numbers.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

__all__ = [
    "is_concrete",
    "concrete_or_none",
    "concrete_value",
    "check_accuracy",
    "check_positions",
    "check_per_atom",
    "check_cell",
    "cell_volume",
    "perpendicular_widths",
    "random_ionic_system",
    "reduced_basis",
]


def is_concrete(x) -> bool:
    """True when ``x`` holds numbers (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_value(x):
    """Concrete numpy value of x, looking through eager autodiff tracers; None under jit.

    Unlike :func:`concrete_or_none`, an argument being differentiated eagerly (a JVP
    tracer wrapping a concrete array) still yields its value, so front doors can make
    their static choices under ``jax.grad``.
    """
    while isinstance(x, jax.core.Tracer):
        primal = getattr(x, "primal", None)
        if primal is None:
            return None
        x = primal
    return None if x is None else np.asarray(x)


def check_accuracy(accuracy, meaning: str = "") -> float:
    """``float(accuracy)`` if it lies in (0, 1), else a ValueError (``meaning`` says what it is)."""
    try:
        accuracy = float(accuracy)
    except (TypeError, ValueError):
        raise ValueError(f"accuracy must be a number in (0, 1), got {accuracy!r}.") from None
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"accuracy{meaning} must lie in (0, 1), got {accuracy!r}.")
    return accuracy


def concrete_or_none(x):
    """``np.asarray(x)`` for concrete inputs, ``None`` for tracers."""
    if x is None or not is_concrete(x):
        return None
    return np.asarray(x)


def _check_finite(name: str, x) -> None:
    v = concrete_or_none(x)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf; pass finite numbers.")


def check_positions(positions):
    """Validate positions: shape (N, 3), N ≥ 1, finite.  Returns a jax array (no copy of user data is modified)."""
    shape = jnp.shape(positions)
    if len(shape) != 2 or shape[1] != 3 or shape[0] < 1:
        raise ValueError(f"positions must have shape (N, 3) with N >= 1, got {shape}.")
    _check_finite("positions", positions)
    return jnp.asarray(positions)


def check_per_atom(name: str, x, n_atoms: int, *, positive: bool = False, dtype=None):
    """Validate a per-atom array of shape (N,): finite and, if asked, strictly positive."""
    shape = jnp.shape(x)
    if shape != (n_atoms,):
        raise ValueError(f"{name} must have shape ({n_atoms},) to match positions, got {shape}.")
    _check_finite(name, x)
    if positive:
        v = concrete_or_none(x)
        if v is not None and np.any(v <= 0):
            raise ValueError(f"{name} must be strictly positive (got min {v.min():g}); "
                             "use point charges (sigma=None) for zero width.")
    return jnp.asarray(x, dtype=dtype)


def check_cell(cell):
    """Validate a periodic cell: shape (3, 3) (rows are lattice vectors), finite, non-degenerate.

    A cell whose volume is below 1e-6 of the product of its vector lengths (flat or
    collinear vectors) is refused.  Mixed periodicity (slabs) is not supported yet:
    a cell with a zero row is refused with that message.
    """
    shape = jnp.shape(cell)
    if shape != (3, 3):
        raise ValueError(f"cell must be a (3, 3) array whose rows are the lattice vectors, got shape {shape}.")
    _check_finite("cell", cell)
    c = concrete_or_none(cell)
    if c is not None:
        lengths = np.linalg.norm(c, axis=1)
        if np.any(lengths == 0):
            raise ValueError("cell has a zero lattice vector: mixed (slab/wire) periodicity is not "
                             "supported yet; pass cell=None for an open boundary or a full 3D cell.")
        vol = abs(np.linalg.det(c))
        widths = perpendicular_widths(c) if vol > 0 else np.zeros(3)
        if vol > 0 and widths.min() < 0.1:
            raise ValueError(f"cell is degenerate: its perpendicular widths {widths} Å include one below "
                             "0.1 Å; pass a physical cell (rows are lattice vectors in Å).")
        if not vol > 1e-6 * np.prod(lengths):
            raise ValueError(f"cell is singular or degenerate (volume {vol:.3g} Å³ for vector lengths "
                             f"{lengths}); the three lattice vectors must be linearly independent.")
    return jnp.asarray(cell)


def cell_volume(cell: np.ndarray) -> float:
    """|det(cell)| in Å³ (host, numpy)."""
    return float(abs(np.linalg.det(np.asarray(cell, dtype=np.float64))))


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell, (3,) in Å (host, numpy).

    Width d is V / |a_e × a_f|, the spacing of the lattice planes spanned by the
    other two vectors; it fixes how many images a cutoff reaches and the mesh
    spacing along that axis.
    """
    c = np.asarray(cell, dtype=np.float64)
    vol = cell_volume(c)
    return np.array([vol / np.linalg.norm(np.cross(c[(d + 1) % 3], c[(d + 2) % 3])) for d in range(3)])


def reduced_basis(cell: np.ndarray) -> np.ndarray:
    """Integer unimodular T such that ``T @ cell`` spans the same lattice with short, near-orthogonal vectors.

    Pairwise (Lagrange–Gauss) reduction repeated to a fixed point (host, numpy).  PME
    builds its mesh along the reduced vectors: a highly skewed cell and its reduced
    equivalent describe the same periodic system, but only the latter has mesh aliases
    far from the origin, which the mesh-error estimate assumes.
    """
    b = np.asarray(cell, dtype=np.float64).copy()
    t = np.eye(3, dtype=np.int64)
    for _ in range(100):
        changed = False
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                mu = round(float(b[i] @ b[j]) / float(b[j] @ b[j]))
                if mu != 0 and np.linalg.norm(b[i] - mu * b[j]) < np.linalg.norm(b[i]) * (1 - 1e-12):
                    b[i] -= mu * b[j]
                    t[i] -= mu * t[j]
                    changed = True
        if not changed:
            break
    if np.linalg.det(t) < 0:
        t[2] *= -1
    return t


def random_ionic_system(n_atoms: int, *, density: float = 0.1, triclinic: bool = False, seed: int = 0):
    """A random neutral system of ±1 point charges (host, numpy) — the benchmark workload.

    Args:
      n_atoms: number of charges N (even N gives exactly neutral ±1 charges; otherwise the
        mean is subtracted).  density: atoms per Å³ (0.1 ≈ liquid water).
      triclinic: a skewed cell of the same volume instead of a cube.  seed: RNG seed.

    Returns:
      (positions (N, 3) Å, charges (N,) e, cell (3, 3) Å, rows are lattice vectors).

    Example:
      >>> pos, q, cell = random_ionic_system(1000)
      >>> pos.shape, round(float(abs(q.sum())), 12)
      ((1000, 3), 0.0)
    """
    rng = np.random.default_rng(seed)
    length = (n_atoms / density) ** (1.0 / 3.0)
    if triclinic:
        cell = np.array([[1.0, 0.0, 0.0], [0.3, 1.0, 0.0], [0.2, 0.25, 1.0]])
        cell *= length / abs(np.linalg.det(cell)) ** (1.0 / 3.0)
    else:
        cell = np.eye(3) * length
    positions = rng.random((n_atoms, 3)) @ cell
    charges = rng.choice([-1.0, 1.0], n_atoms)
    charges -= charges.mean()
    return positions, charges, cell
