"""Host synchronisations in the sampler's hot path (forward and backward of a sampled layer).

On an accelerator, an op whose result the host must read (a tensor's ``.item()``/``int()``/
``bool()``, an output whose size depends on the data) makes the host wait for the device queue.
CPU has no ``torch.cuda.set_sync_debug_mode``, so a TorchDispatchMode records the aten ops that
force such a read and the leantrain function that called each. Device->host copies are recorded
too; on CPU there are none to see (every tensor is already on the host).

The row samplers have none. The cached importance source still has some (``KNOWN_BY_SOURCE`` says
why), and the test fails when one is added (or removed: then shrink it).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import leantrain as lt
from leantrain.sampling import SOURCES
from leantrain.sampling import sampler as sampler_module

SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
            "unique_consecutive", "unique_dim_consecutive", "equal", "is_nonzero"}
LEANTRAIN = str(Path(lt.__file__).parent)
HERE = str(Path(__file__))


class HostSyncRecorder(TorchDispatchMode):
    """Counts (aten op, innermost leantrain or test function calling it) for ops that sync the host."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: Counter[tuple[str, str]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name.split("::")[-1]
        if (name in SYNC_OPS or self._mask_index(name, args) or self._repeats_without_output_size(name, args, kwargs)
                or self._to_host(name, args, kwargs)):
            self.syncs[name, self._caller()] += 1
        return func(*args, **kwargs)

    @staticmethod
    def _mask_index(name: str, args: tuple) -> bool:
        """``x[mask]`` and ``x[mask] = v``: a bool index runs ``nonzero`` below this mode."""
        return name in ("index", "index_put", "index_put_", "_index_put_impl_") and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])

    @staticmethod
    def _repeats_without_output_size(name: str, args: tuple, kwargs: dict) -> bool:
        return name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and kwargs.get("output_size") is None

    @staticmethod
    def _to_host(name: str, args: tuple, kwargs: dict) -> bool:
        if name == "_to_copy":
            device = kwargs.get("device")
            return device is not None and torch.device(device).type == "cpu" and args[0].device.type != "cpu"
        return name == "copy_" and args[0].device.type == "cpu" and args[1].device.type != "cpu"

    @staticmethod
    def _caller() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename.startswith(LEANTRAIN) or frame.f_code.co_filename == HERE:
                return frame.f_code.co_qualname
            frame = frame.f_back
        return "<outside leantrain>"


# none: the NaN/inf row check is a device-side assert, the sample holds k rows whatever the draws, and WTA-CRS's
# winner count stays a tensor (sampling/estimators.py)
KNOWN_BY_METHOD = {"topk": {}, "crs": {}, "wtacrs": {}}
# The cached source keeps its table in host memory (as the WTA-CRS code does): it reads the sample ids and
# the table on the host in forward and copies the output-gradient norms to the host in backward.
KNOWN_BY_SOURCE = {
    "norm": {},
    "running": {},
    "cached": {("_local_scalar_dense", "CachedGradNorms._checked"): 2,
               ("_local_scalar_dense", "CachedGradNorms.scores"): 2, ("index", "CachedGradNorms.scores"): 1,
               ("_local_scalar_dense", "CachedGradNorms.observe"): 1},
}


def sampled_model(method: str, importance: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    lt.apply_sampling(model, lt.SamplingConfig(method, 0.3, importance=importance, minimal_k=2, seed=0),
                      targets=["0", "2"])
    return model


def step(model: torch.nn.Module, x: torch.Tensor) -> None:
    with lt.sample_ids(model, torch.arange(x.shape[0])):
        model(x).square().sum().backward()


def recorded_syncs(model: torch.nn.Module, x: torch.Tensor) -> Counter:
    step(model, x)  # the first step teaches the learnt importance sources; the second uses what they learnt
    with HostSyncRecorder() as recorder:
        step(model, x)
    return recorder.syncs


@pytest.mark.parametrize("importance", SOURCES)
@pytest.mark.parametrize("method", ["crs", "wtacrs", "topk"])
def test_sampled_layer_forward_and_backward_add_no_host_synchronisation(method, importance):
    layers = 2
    known = KNOWN_BY_METHOD[method] | KNOWN_BY_SOURCE[importance]
    expected = Counter({site: layers * n for site, n in known.items()})
    found = recorded_syncs(sampled_model(method, importance), torch.randn(4, 10, 16))
    assert found == expected, f"host syncs changed; new: {dict(found - expected)}, gone: {dict(expected - found)}"


def test_the_recorder_catches_a_host_synchronisation_added_to_the_hot_path(monkeypatch):
    draw = sampler_module.RowSampler.draw

    def draw_and_read(self, x):
        if x.sum().item() != 0.0:  # a Python-side read of a tensor: what the test must catch
            return draw(self, x)
        return draw(self, x)

    monkeypatch.setattr(sampler_module.RowSampler, "draw", draw_and_read)
    found = recorded_syncs(sampled_model("topk", "norm"), torch.randn(4, 10, 16))
    assert found[("_local_scalar_dense", "test_the_recorder_catches_a_host_synchronisation_added_to_the_hot_path."
                  "<locals>.draw_and_read")] == 2


@pytest.mark.parametrize("op", [lambda t: t[0].item(), lambda t: int(t.sum()), lambda t: bool(t.any()), torch.nonzero,
                                lambda t: t[t > 0], torch.unique, lambda t: torch.repeat_interleave(t.long().abs()),
                                lambda t: torch.equal(t, t.clone())])
def test_the_recorder_sees_each_kind_of_sync(op):
    t = torch.randn(5)
    with HostSyncRecorder() as recorder:
        op(t)
    assert sum(recorder.syncs.values()) >= 1
