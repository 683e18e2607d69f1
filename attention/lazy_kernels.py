"""Triton kernel modules imported on first use, so every operator works without triton.

    kernels = LazyKernels(__name__ + ".triton_kernels", "qk_norm_rope")
    if kernels.available(): kernels.load().qk_norm_rope_triton(...)
    kernels.require()       # the module, or a one-line RuntimeError saying why not
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

BACKENDS = ("auto", "triton", "torch")


class LazyKernels:
    def __init__(self, module: str, operator: str) -> None:
        self.module, self.operator = module, operator

    @functools.cached_property
    def _error(self) -> Exception | None:
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # missing, or an incompatible triton/torch: the torch path runs instead
            return exc
        return None

    def available(self) -> bool:
        return self._error is None

    def require(self) -> ModuleType:
        if self._error is not None:
            raise RuntimeError(f"{self.operator} backend 'triton' needs triton ({self._error})") from self._error
        return importlib.import_module(self.module)

    def choose(self, backend: str, use_triton: bool) -> str:
        """Resolve "auto" ("triton" when `use_triton` and the kernels import); validate the name."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown {self.operator} backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if backend == "auto":
            return "triton" if use_triton and self.available() else "torch"
        return backend
