"""Host-side validation of user inputs (numpy, eager, never jitted).

Every front door calls these helpers before anything is compiled, so bad input
raises a :class:`ValueError` that says what to change instead of producing NaN
or a silent wrong answer.  Inputs may also be JAX tracers (when a front door is
called under ``jax.grad`` or ``jax.jit``): then only their shapes are checked,
value checks need concrete numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import perpendicular_widths

__all__ = ['is_concrete', 'concrete_value', 'check_accuracy', 'concrete_or_none', 'check_positions', 'check_per_atom', 'check_cell']


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
