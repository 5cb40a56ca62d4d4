"""Device meshes for data and domain parallelism: which devices, along which axis (host).

Every parallel entry point of jaxlr takes ``devices=`` in one of three forms and turns it
into a one-axis :class:`jax.sharding.Mesh` here:

* ``None`` — no sharding (one device, the historical code path);
* an int P — P devices of ``jax.devices()`` (with K processes: the first P/K local
  devices of every process);
* a :class:`jax.sharding.Mesh` — used as given; its first axis is the sharded one.

Arrays are then placed with :class:`jax.sharding.NamedSharding`: batches split along
their leading (structure or atom) axis, parameters and optimiser state replicated, and
XLA inserts the collectives (e.g. the gradient all-reduce of data-parallel training).

Multi-process (multi-host) runs call :func:`initialize_distributed` once at the start of
every process, before anything else touches jax; ``jax.devices()`` then lists every
process's devices.  Every process builds the same global batch (same data, same seed);
:func:`to_global` makes the global array from the rows of this process's devices only
(:func:`process_rows`), and :func:`gather_global` brings a result spread over several
processes back to every process.  On CPUs the cross-process collectives go through gloo
over TCP (jax's default ``jax_cpu_collectives_implementation``); GPUs use NCCL.
"""

from __future__ import annotations

import numbers
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["AXIS", "device_mesh", "n_devices", "replicated", "sharded_rows", "check_divisible",
           "process_rows", "to_global", "gather_global", "initialize_distributed"]

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
            hint = (" jaxlr.parallel.initialize_distributed() was not called: call it first in every process "
                    "(the JAXLR_COORDINATOR variable is set)." if jax.process_count() == 1
                    and os.environ.get("JAXLR_COORDINATOR") else "")
            raise ValueError(f"devices={count} but only {len(available)} device(s) are present "
                             f"({available[0].platform}); use devices <= {len(available)} (on a CPU, "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={count} set before jax is "
                             f"imported makes that many host devices, for testing).{hint}")
        chosen = _per_process(available, count)
    elif isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        chosen = list(devices)
    else:
        raise ValueError(f"devices must be None, a positive int, a list of jax devices or a jax.sharding.Mesh, "
                         f"got {devices!r}.")
    return Mesh(np.asarray(chosen, dtype=object), (AXIS,))


def _per_process(available, count: int) -> list:
    """``count`` devices, the same number from every process (all of them with one process)."""
    k = jax.process_count()
    if k == 1:
        return available[:count]
    if count % k:
        raise ValueError(f"devices={count} cannot be shared evenly by the {k} processes of this run: use a "
                         f"multiple of {k} (e.g. devices={jax.device_count()}, every device).")
    per = count // k
    chosen = []
    for proc in range(k):
        own = [d for d in available if d.process_index == proc]
        if len(own) < per:
            raise ValueError(f"devices={count} needs {per} devices in every process, but process {proc} has "
                             f"{len(own)}; use devices <= {k * min(len(own), per)}.")
        chosen += own[:per]
    return chosen


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


def process_rows(n_rows: int, mesh: Mesh | None = None) -> slice:
    """The rows of a global batch of ``n_rows`` that this process feeds (multi-process runs).

    Args:
      n_rows: rows (structures or atoms) of the global batch, split along ``mesh``.
      mesh: the device mesh the rows are split over, or None for a mesh of every device
        (``jax.devices()`` is ordered by process, so process k of K owns the k-th
        contiguous block of n_rows/K rows).

    Returns:
      a contiguous ``slice``: the rows held by this process's devices of ``mesh`` (an empty
      slice when it has none).  One process: all rows.

    Raises:
      ValueError: rows that do not split evenly over the processes or the mesh, or a mesh
        whose devices give this process rows that are not contiguous.

    Example:
      >>> process_rows(8)
      slice(0, 8, None)
      >>> process_rows(8, device_mesh(1))
      slice(0, 8, None)
    """
    n_rows = int(n_rows)
    if mesh is None:
        k, count = jax.process_index(), jax.process_count()
        if n_rows % count:
            raise ValueError(f"a global batch of {n_rows} rows cannot be split over {count} processes evenly.")
        per = n_rows // count
        return slice(k * per, (k + 1) * per)
    check_divisible(n_rows, mesh, what="rows of the global batch", name="n_rows")
    blocks = mesh.devices.reshape(n_devices(mesh), -1)      # row block i lives on the devices blocks[i]
    per = n_rows // blocks.shape[0]
    me = jax.process_index()
    mine = [i for i in range(blocks.shape[0]) if any(d.process_index == me for d in blocks[i])]
    if not mine:
        return slice(0, 0)
    if mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError(f"this process's devices hold the row blocks {mine} of the device mesh, not next to each "
                         "other: order the mesh's devices by process (as jax.devices() does).")
    return slice(mine[0] * per, (mine[-1] + 1) * per)


def to_global(tree, mesh: Mesh, *, rows: bool = True):
    """Place a pytree on ``mesh``: leading axis split (``rows=True``) or replicated.

    Every process passes the *whole* global value (in a multi-process run all processes
    build the same batches from the same data and seed); an array is made from the parts
    that this process's devices hold — its own rows (:func:`process_rows`) — through
    ``jax.make_array_from_callback``, so the other rows are never read.  With one process
    this is ``jax.device_put``.  Arrays already placed with the wanted sharding are kept.

    Args:
      tree: a pytree of arrays (numpy or jax), each with the global shape; rows split along
        axis 0, which must be a multiple of the devices of ``mesh``.
      mesh: the device mesh.  rows: split the leading axis (True) or replicate (False).

    Returns:
      the pytree of global :class:`jax.Array`.

    Example:
      >>> import numpy as np
      >>> x = to_global({"a": np.arange(4.0)}, device_mesh(1))
      >>> x["a"].sharding.spec == sharded_rows(device_mesh(1)).spec, x["a"].shape
      (True, (4,))
    """
    sharding = sharded_rows(mesh) if rows else replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        x = np.asarray(x)
        if rows:
            check_divisible(x.shape[0], mesh, what="rows of the global batch", name="the leading axis")
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def gather_global(tree):
    """Arrays spread over several processes' devices → whole arrays on this process.

    Leaves that this process cannot read in full (not ``is_fully_addressable``) are
    gathered from every process (``multihost_utils.process_allgather``) and returned as
    arrays on this process's default device; other leaves are returned as they are.  With
    one process nothing is done.  Every process must call it (it is a collective).

    Example:
      >>> import numpy as np
      >>> gather_global({"a": np.arange(3)})["a"].tolist()
      [0, 1, 2]
    """
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.numpy.asarray(multihost_utils.process_allgather(x, tiled=True))
        return x

    return jax.tree_util.tree_map(get, tree)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
    """Start ``jax.distributed`` for a multi-process run (call once, first thing, in every process).

    Without arguments it reads ``JAXLR_COORDINATOR`` (host:port of process 0, reachable
    from every process), ``JAXLR_NUM_PROCESSES`` and ``JAXLR_PROCESS_ID`` (0 … K − 1);
    when none is set and no argument is given it does nothing (a single-process run) and
    returns False.  On SLURM or Cloud TPU ``jax.distributed.initialize()`` finds these by
    itself: set ``JAXLR_COORDINATOR=auto``.  A second call in the same process returns
    True and does nothing.

    It must run before anything touches jax's devices (``jax.devices()``, any array or
    computation); jax raises ``RuntimeError`` otherwise.  Afterwards ``jax.devices()``
    lists the devices of every process.  On CPUs the cross-process collectives use gloo
    over TCP — jax's default ``jax_cpu_collectives_implementation``, nothing to set (it
    must not be switched off); every process may force several host devices with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (tested: two processes × two
    CPU devices on one machine).  jaxlr changes no jax setting.

    Args:
      coordinator_address: "host:port" of process 0 (or "auto"); default ``JAXLR_COORDINATOR``.
      num_processes: K ≥ 1; default ``JAXLR_NUM_PROCESSES``.
      process_id: 0 ≤ k < K; default ``JAXLR_PROCESS_ID``.

    Returns:
      True when ``jax.distributed`` runs (started now or before), False when nothing is set.

    Raises:
      ValueError: a missing or malformed setting (naming the variable to set).

    Example:
      >>> import os
      >>> "JAXLR_COORDINATOR" in os.environ or initialize_distributed() is False
      True
    """
    env = os.environ
    addr = coordinator_address or env.get("JAXLR_COORDINATOR")
    if addr is None and num_processes is None and process_id is None:
        return False
    if jax.distributed.is_initialized():
        return True
    if addr == "auto":
        jax.distributed.initialize()
        return True
    num = num_processes if num_processes is not None else env.get("JAXLR_NUM_PROCESSES")
    pid = process_id if process_id is not None else env.get("JAXLR_PROCESS_ID")
    if addr is None or num is None or pid is None:
        raise ValueError("a multi-process run needs the coordinator address, the number of processes and this "
                         "process's id: set JAXLR_COORDINATOR=host:port, JAXLR_NUM_PROCESSES and JAXLR_PROCESS_ID "
                         "(or JAXLR_COORDINATOR=auto on SLURM / Cloud TPU).")
    host, _, port = str(addr).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"JAXLR_COORDINATOR={addr!r} is not host:port (e.g. node0:12345 or 127.0.0.1:12345).")
    try:
        num, pid = int(num), int(pid)
    except (TypeError, ValueError):
        raise ValueError(f"JAXLR_NUM_PROCESSES={num!r} and JAXLR_PROCESS_ID={pid!r} must be integers.") from None
    if num < 1 or not 0 <= pid < num:
        raise ValueError(f"JAXLR_PROCESS_ID={pid} must lie in 0 … JAXLR_NUM_PROCESSES − 1 = {num - 1} "
                         f"(JAXLR_NUM_PROCESSES={num} ≥ 1).")
    jax.distributed.initialize(coordinator_address=str(addr), num_processes=num, process_id=pid)
    return True
