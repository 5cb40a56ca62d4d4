"""Search helpers of the tuners (host): bisection on a monotone predicate and the expected neighbour capacity.
"""

from __future__ import annotations

import math

from ..system._neighbors import round_capacity

__all__ = []


def expected_capacity(mean: float, n: int) -> int:
    """Slots per row that :func:`jaxlr.neighbor_list` will give N random atoms (host).

    The neighbour counts are about Poisson with the given mean; the dense list is as wide
    as the largest of N counts (the 1 − 1/N quantile, normal approximation with a
    skewness term) plus the list's own ~10 % rounding.

    Args:
      mean: mean number of neighbours inside the cutoff, (4π/3) r_c³ N/V.
      n: number of atoms (rows).

    Returns:
      the expected capacity (slots per row, a multiple of 8).

    Example:
      >>> expected_capacity(17.8, 4000)   # 4,000 atoms at 0.1 /Å³, r_c = 3.49 Å (measured: 40)
      40
    """
    if mean <= 0.0:
        return 8
    two_log_n = 2.0 * math.log(max(n, 2))
    z = math.sqrt(max(two_log_n - math.log(2.0 * math.pi * two_log_n), 0.0))
    return round_capacity(mean + z * math.sqrt(mean) + (z * z - 1.0) / 6.0)


def bisect(ok, good: float, bad: float, rtol: float | None = None) -> float:
    """Boundary of a monotone predicate by bisection in log space (host).

    ``ok`` holds at ``good`` and fails at ``bad`` (if it fails at ``good``, ``good`` is
    returned as the best effort; if it holds at ``bad``, ``bad``).  Returns the x nearest
    to ``bad`` where ``ok`` still holds: the smallest cutoff, the largest mesh spacing.
    With ``rtol`` the search stops once good/bad is within a factor 1 + rtol (for
    expensive predicates); otherwise it halves the log interval until its ends are adjacent
    floating-point numbers (at most 80 times).
    """
    if not ok(good):
        return good
    if ok(bad):
        return bad
    for _ in range(80):
        if rtol is not None and max(good, bad) <= min(good, bad) * (1.0 + rtol):
            break
        mid = math.sqrt(good * bad)
        if mid == good or mid == bad:  # the interval is down to adjacent floats
            break
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good
