"""onnxruntime latency and kernel counts for comparing ONNX exports (used by the docs' table
and the benchmark; needs onnx and onnxruntime)."""

from __future__ import annotations

import collections
import os
import tempfile
import time

import numpy as np


def session(path, threads: int = 1, optimized_path=None):
    """A CPU ``InferenceSession`` with ``threads`` intra-op threads (1 inter-op thread), all
    graph optimizations, optionally writing the optimized graph to ``optimized_path``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=["CPUExecutionProvider"])


def optimized_kernels(path) -> dict[str, int]:
    """Operator counts of the graph onnxruntime runs after its optimizations (QLinearConv,
    QLinearAdd, Conv, ...)."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        optimized = os.path.join(folder, "optimized.onnx")
        session(path, 1, optimized)
        return dict(collections.Counter(n.op_type for n in onnx.load(optimized).graph.node))


def latencies(paths: dict, inputs: np.ndarray, threads: int = 1, repeats: int = 7) -> dict:
    """Median wall time (seconds) of one ``run`` per model, the models interleaved round by
    round (after one warm-up run each) so that machine load hits all of them alike."""
    sessions = {name: session(path, threads) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for current in sessions.values():
        current.run(None, {current.get_inputs()[0].name: inputs})
    for _ in range(repeats):
        for name, current in sessions.items():
            start = time.perf_counter()
            current.run(None, {current.get_inputs()[0].name: inputs})
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values)) for name, values in times.items()}
