"""Test-session settings: Triton kernels run on the CPU interpreter here, and generated-code
caches go to a fresh folder so that every session builds (and tests) from scratch."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("CODESIGN_CACHE_DIR", tempfile.mkdtemp(prefix="codesign-test-cache-"))
