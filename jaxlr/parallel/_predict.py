"""Batched model predictions spread over devices: :func:`predict_sharded` (data parallel)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._devices import device_mesh, gather_global, n_devices, replicated, sharded_rows, to_global

__all__ = ["predict_sharded", "pad_structures"]


def pad_structures(batch, multiple: int):
    """A batch with padding structures appended so that B is a multiple of ``multiple``.

    The appended structures repeat the last one with ``structure_mask = False`` (and all
    atoms masked), so every model output stays finite; losses and metrics ignore them.
    Works for :class:`jaxlr.data.AtomsBatch` and :class:`jaxlr.data.Targets` alike (every
    leaf has the structure axis first).  Nothing is copied when B already fits.

    Example:
      >>> from jaxlr.testing import toy_batch
      >>> b = pad_structures(toy_batch((1, 8), cutoff=3.0, n_structures=3), 4)
      >>> b.positions.shape[0], b.structure_mask.tolist()
      (4, [True, True, True, False])
    """
    b = jax.tree_util.tree_leaves(batch)[0].shape[0]
    extra = -b % int(multiple)
    if extra == 0:
        return batch

    def grow(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)], axis=0)

    out = jax.tree_util.tree_map(grow, batch)
    if hasattr(out, "structure_mask"):
        live = jnp.arange(b + extra) < b
        out = type(out)(**{**{f: getattr(out, f) for f in out.__dataclass_fields__},
                           "structure_mask": out.structure_mask & live,
                           "atom_mask": out.atom_mask & live[:, None]})
    return out


def predict_sharded(potential, variables, batch, *, devices=None, **kw):
    """:meth:`jaxlr.models.Potential.apply` of one batch with its structures spread over devices.

    Args:
      potential: a :class:`jaxlr.models.Potential`.  variables: its variables.
      batch: :class:`jaxlr.data.AtomsBatch` of B structures.
      devices: None (one device: plain :meth:`~jaxlr.models.Potential.predict`), a device
        count P or a :class:`jax.sharding.Mesh`.  The batch is padded with masked
        structures to a multiple of P (:func:`pad_structures`), split along the structure
        axis, the variables replicated; the padding is removed from the result.
        Multi-process runs (:func:`jaxlr.parallel.initialize_distributed`): every process
        passes the same batch and variables, feeds only the structures of its own devices
        (:func:`jaxlr.parallel.to_global`) and gets the whole result back
        (:func:`jaxlr.parallel.gather_global`).
      **kw: ``forces=``, ``stress=`` as in :meth:`~jaxlr.models.Potential.apply`.

    Returns:
      :class:`jaxlr.models.ModelOutput` with leading axis B, equal to the one-device
      prediction (each structure is computed whole on one device, so up to roundoff of
      nothing: the same operations in the same order).

    Example:
      >>> import jax
      >>> from jaxlr.models import build_potential
      >>> from jaxlr.testing import toy_batch
      >>> pot = build_potential("local", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=(4,))
      >>> batch = toy_batch(pot.species, cutoff=pot.cutoff, n_structures=3)
      >>> v = pot.init(jax.random.PRNGKey(0), batch)
      >>> predict_sharded(pot, v, batch, devices=1).energy.shape
      (3,)
    """
    mesh = device_mesh(devices)
    if mesh is None:
        return potential.predict(variables, batch, **kw)
    b = batch.positions.shape[0]
    forces = kw.pop("forces", True)
    stress = kw.pop("stress", None)
    if kw:
        raise ValueError(f"unknown keyword(s) {sorted(kw)}; predict_sharded takes forces= and stress=.")
    stress = batch.cell is not None if stress is None else bool(stress) and batch.cell is not None
    if batch.cell is not None and getattr(potential.module, "coulomb", None) is not None:
        ok, widest = potential.width_check(variables)
        if not bool(ok):
            raise ValueError(f"a learned Gaussian width ({float(widest):.4g} Å) exceeds the periodic Coulomb plan's "
                             "bound: re-plan with potential.adapted_to(cells, variables=variables).")
    padded = pad_structures(batch, n_devices(mesh))
    step = _sharded_apply(potential, bool(forces), stress, mesh)
    out = gather_global(step(to_global(variables, mesh, rows=False), to_global(padded, mesh)))
    return jax.tree_util.tree_map(lambda x: x[:b], out)


@functools.lru_cache(maxsize=32)
def _sharded_apply(potential, forces: bool, stress: bool, mesh):
    """``potential.apply`` jitted with the batch split along its structure axis over ``mesh``."""
    fn = functools.partial(potential.apply, forces=forces, stress=stress)
    return jax.jit(fn, in_shardings=(replicated(mesh), sharded_rows(mesh)), out_shardings=sharded_rows(mesh))
