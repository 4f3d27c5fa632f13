"""Labels and input checks shared by :mod:`qkernels.eval.plots`; no matplotlib here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

_SEPARATORS = "._/-: "


# ---- names ---------------------------------------------------------------------------------------


def shorten(name: str, width: int = 36) -> str:
    """``name`` cut to at most ``width`` (>= 5) characters by an ellipsis in the middle."""
    width = _count(width, "width", 5)
    return name if len(name) <= width else _cut(name, width, width // 2)


def _cut(name: str, width: int, head: int) -> str:
    """The first ``head`` characters, an ellipsis, and as many of the last as fill ``width``."""
    return name[:head] + "…" + name[head + len(name) - (width - 1) :]


def _shared_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)  # in sorted order, what these two share all share
    n = min(len(first), len(last))
    return first[: next((i for i in range(n) if first[i] != last[i]), n)]


def _common_ends(names: Sequence[str]) -> tuple[int, int]:
    """Lengths of the prefix and suffix that all ``names`` share, cut back to a separator so that
    a distinguishing token (``layer.1`` against ``layer.10``) is never counted as shared."""
    prefix = _shared_prefix(names)
    suffix = _shared_prefix([n[::-1] for n in names])[::-1]
    p = max((prefix.rfind(c) for c in _SEPARATORS), default=-1) + 1
    s = next((len(suffix) - i for i, c in enumerate(suffix) if c in _SEPARATORS), 0)
    return p, s


def _short_labels(names: Sequence[str], width: int = 36) -> list[str]:
    """Labels of at most ``width`` characters: a long name loses a stretch placed where it removes
    least of what tells the names apart (what lies outside their shared prefix and suffix), nearest
    the middle among equals; a label that would repeat an earlier one is cut elsewhere."""
    if not names:
        return []
    p, s = _common_ends(names)
    used: set[str] = set()
    out = []
    for name in names:
        label = name
        if len(name) > width:
            # The separators around the distinguishing part count as part of it: "…0.attn" could
            # be layer 0 or layer 10, ".0.attn" cannot.
            start, end = max(p - 1, 0), min(max(p, len(name) - s) + 1, len(name))
            cuts = _cuts_best_first(name, width, start, end)
            label = next((c for c in cuts if c not in used), cuts[0])
        used.add(label)
        out.append(label)
    return out


def _cuts_best_first(name: str, width: int, start: int, end: int) -> list[str]:
    """Every cut of ``name`` to ``width`` that keeps 3 characters at each end (so a label still shows
    how its name starts and ends), those removing fewest of ``name[start:end]`` first, then those
    nearest the middle."""
    n, remove = len(name), len(name) - (width - 1)
    heads = sorted(
        range(3, width - 3),
        key=lambda a: (max(0, min(a + remove, end) - max(a, start)), abs(2 * a + remove - n)),
    )
    return [_cut(name, width, a) for a in heads]


# ---- input checks ---------------------------------------------------------------------------------


def _values(x: Any, what: str) -> np.ndarray:
    """``x`` (tensor, array or nested sequence) as a flat float64 array of at least one finite value."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to(device="cpu", dtype=torch.float64).numpy().ravel()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64).ravel()
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"{what}: expected numbers (a sequence, numpy array or tensor), got {type(x).__name__}"
            ) from e
    if arr.size == 0:
        raise ValueError(f"{what}: expected at least one value, got none")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{what}: expected finite values, got {arr[bad[0]]} at flat index {bad[0]} "
            f"({bad.size} of {arr.size} values not finite)"
        )
    return arr


def _number(x: Any, what: str, low: float = -math.inf, high: float = math.inf) -> float:
    if (isinstance(x, torch.Tensor) and x.numel() == 1) or (isinstance(x, np.ndarray) and x.size == 1):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, int | float | np.integer | np.floating):
        raise TypeError(f"{what}: expected a number, got {type(x).__name__}")
    v = float(x)
    if not (math.isfinite(v) and low <= v <= high):
        bounds = "" if math.isinf(low) and math.isinf(high) else f" in [{low:g}, {high:g}]"
        raise ValueError(f"{what}: expected a finite number{bounds}, got {v}")
    return v


def _texts(**given: Any) -> None:
    """Checks that each keyword (a label, unit or title) is a string or None."""
    for name, v in given.items():
        if v is not None and not isinstance(v, str):
            raise TypeError(f"{name}: expected a string, got {type(v).__name__}")


def _count(x: Any, what: str, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer) or x < minimum:
        raise ValueError(f"{what}: expected an int >= {minimum}, got {x!r}")
    return int(x)


def _mapping(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise TypeError(f"{what}: expected a dict of name -> data, got {type(d).__name__}")
    if not d:
        raise ValueError(f"{what}: expected at least one entry, got an empty dict")
    for k in d:
        if not isinstance(k, str) or not k.strip():
            raise ValueError(f"{what}: expected non-empty string keys, got {k!r}")
    return d


def _arrays(d: Any, what: str) -> dict[str, np.ndarray]:
    return {k: _values(v, f"{what}[{k!r}]") for k, v in _mapping(d, what).items()}


def _paired(reference: Any, quantized: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The reference values and each format's values, all of the same size."""
    ref = _values(reference, "reference")
    if not isinstance(quantized, Mapping):
        quantized = {"quantized": quantized}
    qs = _arrays(quantized, "quantized")
    for name, q in qs.items():
        if q.size != ref.size:
            raise ValueError(
                f"quantized[{name!r}]: expected {ref.size} values (as many as reference), got {q.size}"
            )
    return ref, qs


def _records(records: Any, fields: tuple[str, ...], what: str) -> list[tuple[Any, ...]]:
    """Rows given as dicts with ``fields`` as keys, objects with them as attributes, or tuples."""
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Iterable):
        raise TypeError(f"{what}: expected a list of records, got {type(records).__name__}")
    rows = list(records)
    if not rows:
        raise ValueError(f"{what}: expected at least one record, got none")
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, Mapping):
            missing = [f for f in fields if f not in r]
            if missing:
                raise ValueError(
                    f"{what}[{i}]: expected keys {list(fields)}, got {list(r)} (missing {missing})"
                )
            out.append(tuple(r[f] for f in fields))
        elif all(hasattr(r, f) for f in fields):
            out.append(tuple(getattr(r, f) for f in fields))
        elif isinstance(r, Sequence) and not isinstance(r, str) and len(r) == len(fields):
            out.append(tuple(r))
        else:
            raise ValueError(
                f"{what}[{i}]: expected a dict with keys {list(fields)} or a {len(fields)}-tuple, got {r!r}"
            )
    return out


def _sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    noise = float(np.sum((q - ref) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref**2)) / noise)
