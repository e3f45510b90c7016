"""Every private torch name handgrad uses, each with a fallback: the one place to look.

handgrad mirrors torch's public behaviour, and a few speed-ups or compatibility details need
names torch does not promise to keep (hook registries, argparse's negative-number matcher,
...). Each such name is read here once, behind a small function with a documented fallback
for a torch (or Python) that moved it, and each has a test in ``tests/test_compat.py``
(the name still exists in the pinned torch; the fallback behaves). Nothing else in ``src/``
imports a private torch name. ``torch._foreach_*`` kernels are not listed: they are fair to
use anywhere, with a plain-loop fallback where they are absent.
"""

from __future__ import annotations
