"""Debian version comparison (deb-version(7)), as dpkg --compare-versions does it."""

from __future__ import annotations

import functools
import re

_PART = re.compile(r"(\D*)(\d*)")


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """Compare an upstream version or revision: non-digit and digit runs in turn."""
    pa, pb = _PART.findall(a), _PART.findall(b)
    # findall yields a final ("", "") pair; pad both to the same length with it
    n = max(len(pa), len(pb))
    pa += [("", "")] * (n - len(pa))
    pb += [("", "")] * (n - len(pb))
    for (sa, da), (sb, db) in zip(pa, pb, strict=True):
        if sa != sb:
            la, lb = [_order(c) for c in sa], [_order(c) for c in sb]
            m = max(len(la), len(lb))
            la += [0] * (m - len(la))
            lb += [0] * (m - len(lb))
            if la != lb:
                return -1 if la < lb else 1
        ia, ib = int(da or 0), int(db or 0)
        if ia != ib:
            return -1 if ia < ib else 1
    return 0


def split(v: str) -> tuple[int, str, str]:
    epoch, _, rest = v.partition(":") if ":" in v else ("0", "", v)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    try:
        e = int(epoch)
    except ValueError:
        e = 0
    return e, upstream, revision


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` is older than, equal to or newer than `b`."""
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


key = functools.cmp_to_key(compare)
