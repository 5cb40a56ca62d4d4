"""Beyond one device: data-parallel training and prediction, and one large system across devices.

Everything here uses JAX's own sharding — a one-axis :class:`jax.sharding.Mesh`,
:class:`~jax.sharding.NamedSharding`, ``jax.shard_map`` and its collectives
(``psum``, ``all_to_all``, ``ppermute``) — no framework of its own.

* Devices: :func:`device_mesh` turns ``devices=None | int | Mesh`` into a mesh;
  :func:`initialize_distributed` starts ``jax.distributed`` for multi-process runs, where
  :func:`to_global` builds global arrays from each process's own rows
  (:func:`process_rows`) and :func:`gather_global` brings results back to every process.
* Data parallel: :func:`jaxlr.train.fit` / :func:`jaxlr.train.evaluate` take ``devices=``;
  :func:`predict_sharded` spreads one batch's structures over devices.
* One large system (domain decomposition): :func:`coulomb_sharded` (energy, potentials,
  forces, stress) and :func:`qeq_sharded` (charge equilibration by PCG) with the
  real-space rows split by atom and the PME mesh in slabs — a distributed 3-D FFT (local
  FFTs and ``all_to_all`` transposes), spreading and interpolation local to each slab
  plus p − 1 halo planes exchanged with ``ppermute``.  The functional layer:
  :func:`slab_layout`, :func:`shard_system`, :func:`make_sharded_coulomb`,
  :func:`make_sharded_reciprocal`, :func:`make_sharded_real_space`;
  :func:`sharded_memory` reads XLA's per-device buffer sizes.

This is an outer layer (like :mod:`jaxlr.train`): it uses the core, the core never
imports it.
"""

from ._coulomb import (
    ShardedCoulombResult,
    ShardedQeqResult,
    ShardedSystem,
    SlabLayout,
    coulomb_sharded,
    divisible_mesh,
    make_sharded_coulomb,
    qeq_sharded,
    shard_system,
    sharded_coulomb_terms,
    sharded_memory,
    slab_layout,
)
from ._devices import (
    AXIS,
    check_divisible,
    device_mesh,
    gather_global,
    initialize_distributed,
    n_devices,
    process_rows,
    replicated,
    sharded_rows,
    to_global,
)
from ._mesh_pme import check_slab_mesh, make_sharded_reciprocal
from ._predict import pad_structures, predict_sharded
from ._rows import make_sharded_real_space

__all__ = [
    "AXIS",
    "ShardedCoulombResult",
    "ShardedQeqResult",
    "ShardedSystem",
    "SlabLayout",
    "check_divisible",
    "check_slab_mesh",
    "coulomb_sharded",
    "device_mesh",
    "divisible_mesh",
    "gather_global",
    "initialize_distributed",
    "make_sharded_coulomb",
    "make_sharded_real_space",
    "make_sharded_reciprocal",
    "n_devices",
    "pad_structures",
    "predict_sharded",
    "process_rows",
    "qeq_sharded",
    "replicated",
    "shard_system",
    "sharded_coulomb_terms",
    "sharded_memory",
    "sharded_rows",
    "slab_layout",
    "to_global",
]
