"""onnxruntime latency and kernel counts for comparing ONNX exports (the docs' tables and the
benchmark); needs onnx and onnxruntime (the ``bench`` extra)."""

from __future__ import annotations

import collections
import os
import tempfile
import time
from collections.abc import Mapping

import numpy as np

from stepsize._validation import check_int, describe


def _session(path, threads: int = 1, optimized_path=None, spinning: bool = True):
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (1 inter-op thread), all
    graph optimizations, optionally writing the optimized graph to ``optimized_path``;
    ``spinning=False`` sets ``session.intra_op.allow_spinning`` to 0."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=["CPUExecutionProvider"])


def onnx_kernels(path: str | os.PathLike) -> dict[str, int]:
    """Operator counts of the graph that onnxruntime runs after its graph optimizations.

    The model is loaded on the CPU provider with all optimizations and the optimized graph is
    written through ``SessionOptions.optimized_model_filepath`` and counted: whether a QDQ model
    runs on integer kernels shows as ``QLinearConv`` / ``QLinearAdd`` instead of ``Conv`` /
    ``Add``.

    Args:
        path: an ``.onnx`` file.

    Returns:
        ``{op_type: count}``.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from stepsize.quantization import export_onnx, quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(),
        ...                                    nn.Conv2d(4, 4, 3), nn.Flatten()), 8)
        >>> x = torch.randn(8, 1, 8, 8); _ = net(x)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = export_onnx(net.eval(), folder + "/net.onnx", x, integer_kernels=True)
        ...     onnx_kernels(path)["QLinearConv"]
        1
    """
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        optimized = os.path.join(folder, "optimized.onnx")
        _session(path, 1, optimized)
        return dict(collections.Counter(n.op_type for n in onnx.load(optimized).graph.node))


def onnx_latencies(paths: Mapping[str, str | os.PathLike], inputs: np.ndarray, *,
                   threads: int = 1, repeats: int = 7, spinning: bool = True,
                   clock: str = "wall") -> dict[str, float]:
    """Median time of one onnxruntime ``run`` per model, the models interleaved.

    Each model gets a CPU session with ``threads`` intra-op threads and one warm-up run; then
    ``repeats`` rounds run every model once each, so that changing machine load hits all of
    them alike. Compare ratios within one call.

    Args:
        paths: ``{name: .onnx file}``; every model takes ``inputs`` as its first input.
        inputs: the input batch (float32 array).
        threads: ``intra_op_num_threads`` (>= 1).
        repeats: timed rounds (>= 1).
        spinning: onnxruntime's default, worker threads spin while waiting for work; False
            (``session.intra_op.allow_spinning = 0``) makes several threads far less sensitive
            to other processes on a shared CPU (each parallel section otherwise waits for a
            descheduled spinner).
        clock: ``"wall"`` (``time.perf_counter``) or ``"thread"`` (``time.thread_time``, the
            CPU time of the calling thread, which runs the whole graph when ``threads`` is 1:
            other processes' time slices on a shared CPU do not inflate it; ``threads`` must
            then be 1).

    Returns:
        ``{name: median seconds}``.

    Example:
        >>> import tempfile, torch
        >>> from torch import nn
        >>> from stepsize.quantization import export_onnx, quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 8)
        >>> x = torch.randn(8, 4); _ = net(x)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = export_onnx(net.eval(), folder + "/net.onnx", x)
        ...     times = onnx_latencies({"qdq": path}, x.numpy(), repeats=3)
        >>> sorted(times), times["qdq"] > 0
        (['qdq'], True)
    """
    if not isinstance(paths, Mapping) or not paths:
        raise TypeError(f"paths must be a non-empty mapping name -> file, got {describe(paths)}")
    if not isinstance(inputs, np.ndarray):
        raise TypeError(f"inputs must be a numpy array, got {describe(inputs)}")
    threads = check_int(threads, "threads", low=1)
    repeats = check_int(repeats, "repeats", low=1)
    if not isinstance(spinning, bool):
        raise TypeError(f"spinning must be a bool, got {describe(spinning)}")
    if clock not in ("wall", "thread"):
        raise ValueError(f"clock must be 'wall' or 'thread', got {clock!r}")
    if clock == "thread" and threads != 1:
        raise ValueError(f"clock='thread' needs threads=1 (the calling thread's CPU time "
                         f"misses the work of other threads), got threads={threads}")
    timer = time.perf_counter if clock == "wall" else time.thread_time
    sessions = {name: _session(path, threads, spinning=spinning) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for current in sessions.values():
        current.run(None, {current.get_inputs()[0].name: inputs})
    for _ in range(repeats):
        for name, current in sessions.items():
            start = timer()
            current.run(None, {current.get_inputs()[0].name: inputs})
            times[name].append(timer() - start)
    return {name: float(np.median(values)) for name, values in times.items()}
