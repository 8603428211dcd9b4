"""`bench` is not an installed package: make the repository root importable for these tests.

(pytest's importlib mode resolves `tests.*` itself, but nothing outside the test paths.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
