"""CUDA-graph semantics on the CPU, for tests of capturable steps.

`StepRecorder` is a TorchDispatchMode that records every aten op a step runs (and raises on
host synchronisations: a captured step must have none). `replay()` then re-runs the
recorded ops on the *recorded* tensors, as a CUDA graph replays its kernels on fixed
addresses: inputs are read from the tensors the capture saw, fresh outputs are copied into
the captured outputs, in-place ops and views act on the captured tensors. Python does not
run, so anything the step computed on the host (a frame index, a replaced state object)
stays frozen at its capture-time value, exactly the bugs a real replay would have.

`signature()` lists the ops with their shapes and non-tensor arguments, to check that two
steps make the same calls.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

# Ops that wait for the device (or copy host data to it) in a CUDA step.
HOST_SYNC_OPS = {
    "aten._local_scalar_dense",  # .item(), bool(t), int(t), Python branching on a tensor
    "aten.nonzero",
    "aten.masked_select",
    "aten.is_nonzero",
    "aten.equal",
    "aten.allclose",
    "aten.lift_fresh",  # torch.tensor(host data)
    "aten.lift_fresh_copy",
    "aten._unique",
    "aten._unique2",
    "aten.unique_dim",
    "aten.unique_consecutive",
    "aten.unique_dim_consecutive",
    "aten.repeat_interleave",  # the Tensor overload sizes its output from the data
}


# Tensor methods that hand device data to Python (seen above the dispatcher, on any device).
HOST_SYNC_METHODS = {"tolist", "numpy", "item", "cpu", "__bool__", "__int__", "__float__", "__index__"}


class HostSyncError(RuntimeError):
    pass


class _NoHostReads(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        to_cpu = name == "to" and any(str(a) == "cpu" for a in (*args[1:], kwargs.get("device")))
        if name in HOST_SYNC_METHODS or to_cpu:
            raise HostSyncError(f"Tensor.{name} reads device data on the host")
        return func(*args, **kwargs)


def _name(func) -> str:
    return func._schema.name.replace("::", ".")


def _check(func, args, kwargs) -> None:
    name = _name(func)
    if name in HOST_SYNC_OPS:
        raise HostSyncError(f"{func} synchronises with the host")
    if name in ("aten.index", "aten.index_put", "aten.index_put_"):  # boolean-mask indexing
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.bool:
                raise HostSyncError(f"{func} with a boolean mask synchronises with the host")


class StepRecorder(TorchDispatchMode):
    def __init__(self, record: bool = True) -> None:
        super().__init__()
        self.record = record
        self.ops: list[tuple] = []
        self._functions = _NoHostReads()

    def __enter__(self):
        self._functions.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self._functions.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _check(func, args, kwargs)
        out = func(*args, **kwargs)
        if self.record:
            self.ops.append((func, args, kwargs, out))
        return out

    def replay(self) -> None:
        """Re-run the recorded ops on the recorded tensors (no Python of the step runs)."""
        for func, args, kwargs, out in self.ops:
            new = func(*args, **kwargs)
            for mine, fresh in zip(tree_flatten(out)[0], tree_flatten(new)[0]):
                if isinstance(mine, torch.Tensor) and not _same_storage(mine, fresh):
                    mine.copy_(fresh)

    def signature(self) -> list[tuple]:
        """(op, tensor shapes/dtypes and other arguments, output shapes) per recorded op."""

        def describe(x):
            return ("T", tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else x

        return [(_name(f), tree_map(describe, (a, k)), tree_map(describe, o)) for f, a, k, o in self.ops]


def _same_storage(a: torch.Tensor, b) -> bool:
    return isinstance(b, torch.Tensor) and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
