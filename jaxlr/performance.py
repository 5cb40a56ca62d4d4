"""Performance constants: block sizes, one-pass limits, cost models and solver limits, per backend.

Every number here changes how fast jaxlr runs, never what it computes: block sizes of
the real-space and mesh loops, the size below which a sum runs in one pass, the atom count
above which atoms are spatially sorted, the tuner's cost model, and the system sizes at
which the equilibration front doors switch from a dense factorisation to PCG.  They were
measured on a 2-core x86 CPU (the comments say how); on other backends the CPU table is
used until a measured table is added to :data:`TABLES` under the backend's name
(``jax.default_backend()``: ``"cpu"``, ``"gpu"``, ``"tpu"``).

Example:
  >>> from jaxlr import performance
  >>> performance.costs("cpu").block_slots
  131072
"""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["Costs", "CPU", "TABLES", "costs"]


@dataclasses.dataclass(frozen=True)
class Costs:
    """Backend-dependent performance constants (immutable).

    Attributes:
      block_slots: real-space neighbour slots processed per block of the row loop
        (intermediates of one block stay in cache).
      single_pass_bytes: lists whose (N, M) array of kernel values takes at most this many
        bytes are summed in one pass when derivatives are wanted (2-core CPU: at 4,000
        atoms × 80 slots one pass takes 1.5 ms and three blocks 3.8 ms; 16,000 × 80 in
        float32: energy + forces 20–22 against 24 ms; 8,000 × 152 in float64, past the
        limit, 45 against 31 ms).
      single_pass_bytes_energy: the same limit for energies and potentials of point
        charges alone, which materialise one (N, M) array instead of about six (below
        glibc's 32 MB allocation threshold; 16,000 atoms × 152 slots in float64: one pass
        14 ms, blocks 25 ms, ``bench_forces_overhead.py --parts``).
      spread_block_points: B-spline stencil points (atoms × p³) spread per block (2^19 is
        20 % faster than 2^17 at 4,000 atoms and no slower at 64,000).
      interp_block_points: stencil points interpolated per block (2^17: XLA materialises
        each block's gathered windows, 1.2–3.2× faster than one fused pass over 2^19).
      sort_above: systems with more atoms than this are evaluated in a spatially sorted
        order by the PME front doors (cache-friendly scatter and gathers).
      tuner_costs: estimated seconds per unit of work for energy + forces, per dtype: a
        neighbour slot of the real-space sum, a B-spline stencil point, a mesh point ×
        log2(mesh size) of the FFT pair, a mesh point of elementwise work, a k-vector × atom
        of the Ewald sum (``benchmarks/calibrate_costs.py`` measures them).
      dense_max_open: ``solver="auto"`` factorises densely up to this many atoms (open
        boundary) …
      dense_max_periodic: … and this many in a periodic cell (the Ewald matrix costs
        O(N² K) to build).
      dense_limit: the largest system (unknowns) the front doors factorise densely at all:
        beyond it the N×N matrix needs gigabytes and O(N³) time, and the CPU LAPACK of
        jaxlib 0.10 was measured to crash in the Cholesky factorisation of a 16,000 ×
        16,000 matrix.
      pcg_pair_cost: seconds per neighbour slot and matvec when the pair kernels are cached.
      lode_pme_block_points: LODE stencil points gathered per block of atoms.
      lode_direct_block_pairs: pair-function evaluations (rows × columns) per block of the
        open-boundary LODE all-pairs loop.
    """

    block_slots: int = 131072
    single_pass_bytes: int = 6 << 20
    single_pass_bytes_energy: int = 24 << 20
    spread_block_points: int = 1 << 19
    interp_block_points: int = 1 << 17
    sort_above: int = 4096
    tuner_costs: dict = dataclasses.field(default_factory=lambda: {
        "float32": {"pair": 5e-9, "stencil": 3.7e-9, "fft": 0.45e-9, "mesh": 0.5e-9, "kvec": 4e-9},
        "float64": {"pair": 10e-9, "stencil": 3.9e-9, "fft": 0.9e-9, "mesh": 0.5e-9, "kvec": 8e-9},
    })
    dense_max_open: int = 3000
    dense_max_periodic: int = 1500
    dense_limit: int = 12000
    pcg_pair_cost: float = 3e-9
    lode_pme_block_points: int = 1 << 18
    lode_direct_block_pairs: int = 512


#: the table measured on a 2-core x86 CPU
CPU = Costs()

#: tables per backend name; a backend without one uses :data:`CPU`
TABLES: dict[str, Costs] = {"cpu": CPU}


def costs(backend: str | None = None) -> Costs:
    """The performance table of ``backend`` (default: ``jax.default_backend()``).

    Args:
      backend: "cpu", "gpu", "tpu", … or None for the default backend.

    Returns:
      :class:`Costs`: the backend's table, or :data:`CPU` where none has been measured.

    Example:
      >>> costs("tpu") is TABLES.get("tpu", CPU)
      True
    """
    return TABLES.get(backend or jax.default_backend(), CPU)
