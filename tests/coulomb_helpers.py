"""Helpers shared by the Coulomb test modules (``test_ewald_pme_reference``,
``test_coulomb_derivatives``, ``test_coulomb_invariances``, ``test_tuning``,
``test_coulomb_front_door``).

Imported as ``from coulomb_helpers import ...`` (``tests/`` is on ``sys.path``, see
``conftest.py``).  The cached systems and jitted functions live here, in one module, so
that test modules run in the same process share their compilations and references.
"""

from __future__ import annotations

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import reference as ref
from conftest import random_cluster, random_system, rms

import jaxlr
from jaxlr.tuning._coulomb import force_scale

coulomb_module = importlib.import_module("jaxlr._api.coulomb")

SQRT2 = math.sqrt(2.0)


@functools.lru_cache(maxsize=None)
def terms_fn(method, mesh=None, background=False, stress=True):
    """Jitted ``coulomb_terms`` → (E, potentials, forces, stress)."""
    def f(positions, charges, cell, sigma, smearing, neighbors, kvectors):
        return jaxlr.coulomb_terms(positions, charges, cell=cell, stress=stress, sigma=sigma,
                                   smearing=smearing, neighbors=neighbors, kvectors=kvectors,
                                   method=method, mesh=mesh, background=background)
    return jax.jit(f)


def pad_kvectors(kvec, n_chunks):
    """Pad (n, chunk, 3) k-vectors with zero vectors (which contribute nothing) to n_chunks chunks."""
    kvec = np.asarray(kvec)
    if kvec.shape[0] >= n_chunks:
        return jnp.asarray(kvec)
    pad = np.zeros((n_chunks - kvec.shape[0],) + kvec.shape[1:])
    return jnp.asarray(np.concatenate([kvec, pad]))


def max_rel(a, b):
    """max |a − b| / max |b|."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


REF_SYSTEMS = {
    "cubic-point": dict(seed=11, n=64, triclinic=False, gaussian=False),
    "triclinic-point": dict(seed=12, n=100, triclinic=True, gaussian=False),
    "cubic-gauss": dict(seed=13, n=64, triclinic=False, gaussian=True),
    "triclinic-gauss": dict(seed=14, n=80, triclinic=True, gaussian=True),
}


@functools.lru_cache(maxsize=None)
def reference_system(name):
    """Random system and its converged numpy Ewald reference (cached for the session)."""
    kw = REF_SYSTEMS[name]
    pos, q, cell, sig = random_system(kw["seed"], kw["n"], triclinic=kw["triclinic"], gaussian=kw["gaussian"])
    # half the reference's default smearing (still converged to round-off: its cutoffs follow
    # s) moves work from the O(N² images) real-space sum to the O(N k) k-sum: ~5× faster here
    s_default = ref.ewald_parameters(cell, sig)[0]
    smearing = max(0.5 * s_default, SQRT2 * float(np.max(sig)) if sig is not None else 0.0)
    energy, phi, forces, stress = ref.ewald_energy(pos, q, cell, sig, smearing=smearing)
    return dict(pos=pos, q=q, cell=cell, sigma=sig, energy=energy, potentials=phi, forces=forces,
                stress=stress, f0=force_scale(pos, q, cell), frms=rms(forces))


METHODS3 = ("direct", "ewald", "pme")
DERIV_SPEC = jaxlr.MeshSpec((10, 10, 10), order=6)


@functools.lru_cache(maxsize=None)
def deriv_system(method):
    """Small Gaussian system (N = 10) with cheap explicit parameters for derivative checks.

    The derivatives of the *discrete* energy are checked, so the parameters need not be
    accurate, only fixed: smearing 1.1 Å, cutoff 5.5 Å, k-cutoff 3.5/Å, mesh 10³ order 6.
    """
    if method == "direct":
        pos, q, sig = random_cluster(51, 10, gaussian=True, box=5.0)
        return dict(pos=jnp.asarray(pos), q=jnp.asarray(q), sigma=jnp.asarray(sig), cell=None,
                    smearing=None, nbrs=None, kvec=None, mesh=None)
    pos, q, cell, sig = random_system(52, 10, triclinic=True, gaussian=True)
    return dict(pos=jnp.asarray(pos), q=jnp.asarray(q), sigma=jnp.asarray(sig), cell=jnp.asarray(cell),
                smearing=jnp.asarray(1.1), nbrs=jaxlr.neighbor_list(pos, 5.5, cell),
                kvec=jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, 3.5)) if method == "ewald" else None,
                mesh=DERIV_SPEC if method == "pme" else None)


@functools.lru_cache(maxsize=None)
def invariance_system():
    pos, q, cell, _ = random_system(61, 32, triclinic=True)
    return pos, q, cell
