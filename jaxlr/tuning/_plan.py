"""Front-door parameter reuse: a moving system keeps its compiled function.

The front doors :func:`jaxlr.coulomb` and :func:`jaxlr.qeq` tune their parameters
(smearing, cutoff, mesh, spline order or k-cutoff) for the positions they are given, and
build a neighbour list whose capacity is rounded up from the largest neighbour count.  A
fresh choice on every call would make a moving system — MD through the front door, a
geometry optimisation, a scan, finite differences — recompile whenever a static choice
(mesh, spline order, list capacity) flips: on a random 4,000-atom system moved by 0.03 Å
per call, 11 of 30 calls of ``jaxlr.coulomb`` recompiled (about 3 s each against 0.2 s).

So each front door remembers, per kind of system (a ``key``: atom count, dtype, method,
accuracy, …), the parameters it tuned last and the list capacity it used.  The next call
keeps the parameters while their estimated error for the new positions, charges and cell
still meets the accuracy (and is not below half of what it was when they were tuned, so a
much easier system is tuned afresh rather than over-served), and keeps the capacity while
the new largest neighbour count fits and the capacity is at most 30 % above what a fresh
list would take.  Otherwise it tunes afresh and remembers that.  Results always meet the
requested accuracy by the tuner's estimate; only which admissible parameters are used
depends on the calls before.  :func:`clear_tuning_cache` forgets everything.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._coulomb import tune_coulomb
from ..system._neighbors import Neighbors, with_capacity

__all__ = ["clear_tuning_cache"]

#: at most this many kinds of system are remembered (the oldest is forgotten first)
MAX_ENTRIES = 64
#: a remembered capacity is kept while it is at most this factor above a fresh list's
CAPACITY_SLACK = 1.3

_PARAMS: dict = {}
_CAPACITY: dict = {}


def clear_tuning_cache() -> None:
    """Forget the parameters and list capacities the front doors remembered (host).

    After this, the next call of :func:`jaxlr.coulomb` or :func:`jaxlr.qeq` tunes as if it
    were the first.

    Example:
      >>> import jaxlr
      >>> jaxlr.clear_tuning_cache()
    """
    _PARAMS.clear()
    _CAPACITY.clear()


def _remember(store: dict, key, value) -> None:
    store.pop(key, None)
    store[key] = value
    while len(store) > MAX_ENTRIES:
        store.pop(next(iter(store)))


def tuned(key, positions, charges, cell, sigma, *, accuracy: float, **kwargs):
    """:func:`jaxlr.tune_coulomb`, keeping the parameters last tuned under ``key`` while they fit.

    Args:
      key: hashable description of the kind of system and request (the caller's choice),
        or None: plain :func:`jaxlr.tune_coulomb`, nothing remembered (the front doors
        pass None when the caller gave any parameter explicitly).
      positions, charges, cell, sigma, accuracy, kwargs: as for :func:`jaxlr.tune_coulomb`
        (with a key: without explicit smearing, cutoff, mesh, order or k-cutoff).

    Returns:
      :class:`jaxlr.CoulombParams`: the remembered ones (with the estimated error for
      these inputs) when their estimated error lies in [½ × the error they were tuned
      with, ``accuracy``], otherwise a fresh tuning, which is then remembered.
    """
    if key is None:
        return tune_coulomb(positions, charges, cell, sigma, accuracy=accuracy, **kwargs)
    last = _PARAMS.get(key)
    if last is not None:
        again = tune_coulomb(
            positions, charges, cell, sigma, accuracy=accuracy,
            **dict(kwargs, method=last.method, smearing=last.smearing, cutoff=last.cutoff, mesh=last.mesh,
                   order=None if last.mesh is None else last.mesh.order, k_cutoff=last.k_cutoff,
                   estimate=True))
        same = (again.method, again.mesh, again.k_cutoff) == (last.method, last.mesh, last.k_cutoff)
        if same and 0.5 * last.estimated_error <= again.estimated_error <= accuracy * 1.0001:
            _remember(_PARAMS, key, last)
            return dataclasses.replace(last, estimated_error=again.estimated_error)
    params = tune_coulomb(positions, charges, cell, sigma, accuracy=accuracy, **kwargs)
    _remember(_PARAMS, key, params)
    return params


def stable_capacity(key, nbrs: Neighbors) -> Neighbors:
    """The host list ``nbrs`` with the capacity last used under ``key`` when it still fits.

    Args:
      key: as for :func:`tuned` (include the cutoff), or None: ``nbrs`` unchanged.
      nbrs: a freshly built host list (capacity rounded up from its largest count).

    Returns:
      ``nbrs`` padded (or cut back) to the remembered capacity when the largest neighbour
      count fits in it and it is at most :data:`CAPACITY_SLACK` × ``nbrs.capacity``;
      otherwise ``nbrs`` itself, whose capacity is then remembered.
    """
    if key is None:
        return nbrs
    needed = int(np.asarray(nbrs.mask).sum(axis=1).max()) if nbrs.idx.shape[0] else 0
    cap = _CAPACITY.get(key)
    if cap is not None and needed <= cap <= CAPACITY_SLACK * nbrs.capacity:
        _remember(_CAPACITY, key, cap)
        return nbrs if cap == nbrs.capacity else with_capacity(nbrs, cap)
    _remember(_CAPACITY, key, nbrs.capacity)
    return nbrs
