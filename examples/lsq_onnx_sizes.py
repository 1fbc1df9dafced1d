"""Issue 16: ONNX speed-up of the 8-bit integer-kernel export against image size
(docs/quantization.md, "The quick deployment is measured at 224x224").

Usage (from the repository root):
    OMP_NUM_THREADS=1 .venv/bin/python examples/lsq_onnx_sizes.py

For each model and size: the bench's float, ours (integer kernels) and peer (onnxruntime
quantize_static) ONNX files (``lsq._deploy_exports``, random weights, BN statistics and steps
from 16 random images); three CPU sessions with one intra-op thread, spinning off; 5 warm-up
and 40 interleaved timed rounds of ``time.thread_time()`` around each ``run`` (batch 1);
medians in ms.
"""

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

from stepsize.benchmarks import lsq

SIZES = (32, 56, 112, 224)


def session(path):
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def medians(paths, size, warmup=5, rounds=40):
    sessions = {k: session(p) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    times = {k: [] for k in sessions}
    for i in range(warmup + rounds):
        for key, s in sessions.items():
            start = time.thread_time()
            s.run(None, {s.get_inputs()[0].name: x})
            if i >= warmup:
                times[key].append(time.thread_time() - start)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    builders, _ = lsq.architectures()
    for name in lsq.DEPLOY_MODELS:
        ours, peer = [], []
        for size in SIZES:
            with tempfile.TemporaryDirectory() as folder:
                paths, _ = lsq._deploy_exports(name, builders[name],
                                               dict(lsq.QUICK, deploy_size=size), 0,
                                               Path(folder))
                ms = medians(paths, size)
            ours.append(f"{ms['ours']:.2f} / {ms['float']:.2f} ({ms['float'] / ms['ours']:.2f}x)")
            peer.append(f"{ms['float'] / ms['peer']:.2f}x" if "peer" in ms else "-")
            print(name, size, ms, flush=True)
        print(f"| {name}, ours / float ms | " + " | ".join(ours) + " |")
        print(f"| {name}, peer speed-up | " + " | ".join(peer) + " |", flush=True)
