"""Device meshes for data and domain parallelism: which devices, along which axis (host).

Every parallel entry point of jaxlr takes ``devices=`` in one of three forms and turns it
into a one-axis :class:`jax.sharding.Mesh` here:

* ``None`` — no sharding (one device, the historical code path);
* an int P — the first P of ``jax.devices()`` (all processes' devices in a multi-host run);
* a :class:`jax.sharding.Mesh` — used as given; its first axis is the sharded one.

Arrays are then placed with :class:`jax.sharding.NamedSharding`: batches split along
their leading (structure or atom) axis, parameters and optimiser state replicated, and
XLA inserts the collectives (e.g. the gradient all-reduce of data-parallel training).

Multi-host runs call ``jax.distributed.initialize()`` once at the start of every process
(see :func:`initialize_distributed`); ``jax.devices()`` then lists every process's devices
and each process feeds only its own rows (:func:`process_rows`).
"""

from __future__ import annotations

import numbers
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS", "device_mesh", "n_devices", "replicated", "sharded_rows", "check_divisible",
           "process_rows", "to_global", "initialize_distributed"]

#: the name of the sharded axis of the meshes made here
AXIS = "shard"


def device_mesh(devices=None) -> Mesh | None:
    """A one-axis device mesh from ``devices`` (None, an int, a sequence of devices or a Mesh).

    Args:
      devices: None (no sharding: returns None), a positive int P (the first P devices
        of ``jax.devices()``), a sequence of :class:`jax.Device`, or a
        :class:`jax.sharding.Mesh` (returned as is).

    Returns:
      :class:`jax.sharding.Mesh` with the axis :data:`AXIS` (or the given mesh), or None.

    Raises:
      ValueError: a count that is not a positive integer or exceeds the devices present.

    Example:
      >>> dict(device_mesh(1).shape)
      {'shard': 1}
      >>> device_mesh(None) is None
      True
    """
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if devices.devices.size < 1:
            raise ValueError("the device mesh is empty.")
        return devices
    available = jax.devices()
    if isinstance(devices, numbers.Integral) and not isinstance(devices, bool):
        count = int(devices)
        if count < 1:
            raise ValueError(f"devices must be a positive number of devices, got {devices}.")
        if count > len(available):
            raise ValueError(f"devices={count} but only {len(available)} device(s) are present "
                             f"({available[0].platform}); use devices <= {len(available)} (on a CPU, "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={count} set before jax is "
                             "imported makes that many host devices, for testing).")
        chosen = available[:count]
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ValueError(f"devices must be None, a positive int, a list of jax devices or a jax.sharding.Mesh, "
                         f"got {devices!r}.")
    return Mesh(np.asarray(chosen, dtype=object), (AXIS,))


def n_devices(mesh: Mesh | None) -> int:
    """Devices along the sharded (first) axis of ``mesh``; 1 for None."""
    return 1 if mesh is None else int(mesh.devices.shape[0])


def _axis(mesh: Mesh) -> str:
    return mesh.axis_names[0]


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that keeps a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def sharded_rows(mesh: Mesh) -> NamedSharding:
    """The sharding that splits the leading axis over the first axis of ``mesh``."""
    return NamedSharding(mesh, P(_axis(mesh)))


def check_divisible(size: int, mesh: Mesh | None, *, what: str, name: str) -> None:
    """ValueError unless ``size`` is a multiple of the device count, saying what to change.

    Example:
      >>> check_divisible(8, device_mesh(1), what="structures per batch", name="batch_size")
    """
    p = n_devices(mesh)
    if size % p:
        lower = (size // p) * p
        options = f"{lower} or {lower + p}" if lower else f"{p}"
        raise ValueError(f"{name}={size} ({what}) is not divisible by the {p} devices it is split over: "
                         f"use {name}={options} (a multiple of {p}), or fewer devices.")


def process_rows(n_rows: int) -> slice:
    """The rows of a global batch of ``n_rows`` that this process feeds (multi-host runs).

    Devices are ordered by process in ``jax.devices()``, so process k of K owns the k-th
    contiguous block of n_rows/K rows.  One process: all rows.

    Example:
      >>> process_rows(8)
      slice(0, 8, None)
    """
    k, count = jax.process_index(), jax.process_count()
    if n_rows % count:
        raise ValueError(f"a global batch of {n_rows} rows cannot be split over {count} processes evenly.")
    per = n_rows // count
    return slice(k * per, (k + 1) * per)


def to_global(tree, mesh: Mesh, *, rows: bool = True):
    """Place a pytree on ``mesh``: leading axis split (``rows=True``) or replicated.

    With one process the arrays are ``jax.device_put`` onto the sharding; with several
    (``jax.distributed``), every process passes the *whole* global batch it built (all
    processes build the same batches from the same seed) and contributes only its own
    rows (:func:`process_rows`) through ``jax.make_array_from_process_local_data``.
    """
    sharding = sharded_rows(mesh) if rows else replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        x = np.asarray(x)
        local = x[process_rows(x.shape[0])] if rows else x
        return jax.make_array_from_process_local_data(sharding, local, x.shape)

    return jax.tree_util.tree_map(put, tree)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Start ``jax.distributed`` for a multi-host run (call once, first thing, in every process).

    Without arguments it reads ``JAXLR_COORDINATOR`` (host:port of process 0),
    ``JAXLR_NUM_PROCESSES`` and ``JAXLR_PROCESS_ID``; when none is set and no argument is
    given it does nothing (a single-process run) and returns False.  On SLURM or Cloud TPU
    ``jax.distributed.initialize()`` finds these by itself: set ``JAXLR_COORDINATOR=auto``.

    Returns:
      True when ``jax.distributed.initialize`` was called.
    """
    env = os.environ
    addr = coordinator_address or env.get("JAXLR_COORDINATOR")
    if addr is None and num_processes is None and process_id is None:
        return False
    if addr == "auto":
        jax.distributed.initialize()
        return True
    num = num_processes if num_processes is not None else env.get("JAXLR_NUM_PROCESSES")
    pid = process_id if process_id is not None else env.get("JAXLR_PROCESS_ID")
    if addr is None or num is None or pid is None:
        raise ValueError("a multi-host run needs the coordinator address, the number of processes and this "
                         "process's id: set JAXLR_COORDINATOR=host:port, JAXLR_NUM_PROCESSES and JAXLR_PROCESS_ID "
                         "(or JAXLR_COORDINATOR=auto on SLURM / Cloud TPU).")
    jax.distributed.initialize(coordinator_address=addr, num_processes=int(num), process_id=int(pid))
    return True
