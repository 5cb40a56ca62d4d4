"""Deprecated keyword aliases, kept for one release (host)."""

from __future__ import annotations

import warnings

__all__ = ["renamed_keyword"]


def renamed_keyword(old: str, new: str, old_value, new_value, *, default=None, where: str = ""):
    """The value of keyword ``new``, taking a deprecated ``old`` spelling into account (host).

    Args:
      old, new: the keyword names.  old_value: what the caller passed as ``old`` (None: not
        passed).  new_value: what the caller passed as ``new``.  default: ``new``'s default,
        to tell whether both were passed.  where: the function's name, for the messages.

    Returns:
      ``new_value``, or ``old_value`` with a :class:`DeprecationWarning` when only the old
      keyword was given.

    Raises:
      ValueError: both keywords were given.

    Example:
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as w:
      ...     warnings.simplefilter("always")
      ...     renamed_keyword("want_stress", "stress", False, True, default=True, where="f")
      False
      >>> w[0].category.__name__
      'DeprecationWarning'
    """
    if old_value is None:
        return new_value
    if new_value is not default and new_value != default:
        raise ValueError(f"{where}: pass {new}= only ({old}= is its deprecated spelling).")
    warnings.warn(f"{where}: the keyword {old}= is deprecated and will be removed in the next release; "
                  f"use {new}=.", DeprecationWarning, stacklevel=3)
    return old_value
