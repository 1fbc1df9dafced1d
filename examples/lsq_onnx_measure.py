"""Issue 16 item 2: re-measure the integer-kernel ONNX export (kernels, speed, agreement).

Usage (from the repository root):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        .venv/bin/python examples/lsq_onnx_measure.py PHASE [PHASE ...] [--models resnet18,...]
PHASE: train (float models on sklearn digits, cached in $LSQ_ONNX_CACHE, default
results/lsq_onnx_cache), agree (argmax
agreement on the 397 held-out digits at 32x32), kernels (onnxruntime optimized-graph counts),
profile (onnxruntime's profiler: kernel time per operator type, batch 1 at 224x224, 1 thread),
speed (onnx_latencies at 224x224, batch 1/32, threads 1/2, all models interleaved), layers
(the uint8 codes of every output quantizer in onnxruntime's integer kernels against the
deployment model's, with its kernel emulation and with the float32 fake arithmetic, on the
first 400 held-out inputs with shifts), sources
(which of the export's two inexact steps moves the argmax of the plain fake model: the
deployment model with its calibrated output quantizers or its bias rounding removed, or
calibrated on the held-out inputs too, i.e. without clipping).
Options: --deployed (agreement also against the fake model with the deployed quantizers,
``deployment_model``, which computes onnxruntime's kernel arithmetic in eval mode, and against
its float32 fake arithmetic without that emulation), --finetune N (N epochs of Adam 1e-5 on
that model in eval mode), --qat N (N epochs of train_model's recipe on that model: QAT of what
is deployed), --shifted (held-out digits and their 4 one-pixel shifts: 1985 inputs), --no-spin
(speed with session.intra_op.allow_spinning 0), --init METHOD (activation step init of
quantize_model, default auto: min/max at 8 bits).

Recipe as docs/quantization.md "Issue 16: ONNX on integer kernels": torchvision resnet18 /
mobilenet_v2 (num_classes=10) trained in float on digits (8x8 -> bilinear 3x32x32,
(x/16 - 0.3)/0.4, 1400 train / 397 held out, Adam 1e-3, batch 50, 3 / 6 epochs, BN statistics
recomputed over the training set); quantize_model(bits=8), initial steps (the defaults) on 64
training images (also the calibration_input); peer: onnxruntime quantize_static after
quant_pre_process.
"""

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stepsize.benchmarks.lsq import _peer_quantize, torchvision_models  # noqa: E402
from stepsize.quantization import export_onnx, quantize_model  # noqa: E402
from stepsize.quantization.export import onnx_kernels, onnx_latencies  # noqa: E402

CACHE = Path(os.environ.get("LSQ_ONNX_CACHE", "results/lsq_onnx_cache"))
EPOCHS = {"resnet18": 3, "mobilenet_v2": 6}
torch.set_num_threads(1)


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x / 16 - 0.3) / 0.4
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def build(name):
    return getattr(torchvision_models(), name)(num_classes=10)


def _adam_epochs(model, params, lr, x, y, epochs):
    """Adam on cross-entropy, batches of 50 in a fresh random order each epoch (model's mode
    as given)."""
    opt = torch.optim.Adam(params, lr)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 50):
            idx = perm[i:i + 50]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def train(name):
    (x, y), _ = digits()
    torch.manual_seed(0)
    net = build(name).train()
    _adam_epochs(net, net.parameters(), 1e-3, x, y, EPOCHS[name])
    for m in net.modules():  # BN statistics over the training set
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum, _ = None, m.reset_running_stats()
    net.train()
    with torch.no_grad():
        for i in range(0, len(x), 50):
            net(x[i:i + 50])
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), CACHE / f"{name}.pt")


def load(name):
    net = build(name)
    net.load_state_dict(torch.load(CACHE / f"{name}.pt", weights_only=True))
    return net.eval()


def quantized(net, calibration):
    init = sys.argv[sys.argv.index("--init") + 1] if "--init" in sys.argv else "auto"
    q = quantize_model(copy.deepcopy(net), bits=8, activation_init=init).eval()
    with torch.no_grad():
        q(calibration)
    return q


def export_float(net, path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def run_all(path, x):
    """Every output of the ONNX model at ``path`` on ``x`` (onnxruntime, CPU, one thread, all
    graph optimizations)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    s = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return s.run(None, {"input": x.numpy()})


def run(path, x):
    return run_all(path, x)[0]


def exports(name, folder, size, deployed=False, finetune=0, qat=0):
    """float/ours/peer ONNX files of one model at ``size`` (calibration: training images)."""
    (x, y), _ = digits()
    calibration = x[:64] if size == 32 else F.interpolate(x[:32], size=size, mode="bilinear")
    net = load(name)
    q = quantized(net, calibration)
    paths = {k: Path(folder) / f"{name}_{size}_{k}.onnx" for k in ("float", "ours", "peer")}
    export_float(net, paths["float"], calibration)
    export_onnx(q, paths["ours"], calibration[:1], integer_kernels=True,
                calibration_input=calibration)
    _peer_quantize(paths["float"], paths["peer"], calibration)
    extra = {}
    if deployed:
        from stepsize.quantization.export import deployment_model

        d = deployment_model(q, calibration)
        if finetune:
            d = fine_tune(d, q, x, y, finetune)
        if qat:
            d = qat_train(d, x, y, qat)
        paths["deployed"] = Path(folder) / f"{name}_{size}_deployed.onnx"
        export_onnx(d, paths["deployed"], calibration[:1], integer_kernels=True,
                    calibration_input=calibration)
        extra["deployed"] = d
    return net, q, paths, extra


def fine_tune(d, q, x, y, epochs):
    """QAT of the deployed graph: cross-entropy on the training labels, eval mode (batch norm
    frozen), Adam 1e-5 on weights and all steps, batch 50."""
    d = copy.deepcopy(d).eval()
    torch.manual_seed(1)
    _adam_epochs(d, [p for p in d.parameters() if p.requires_grad], 1e-5, x, y, epochs)
    return d.eval()


def qat_train(d, x, y, epochs):
    """QAT of the deployed graph with the library's recipe: ``train_model`` (train mode, batch
    norm on batch statistics, SGD momentum 0.9, cosine LR 1e-3 (the paper's 8-bit rate),
    default weight decay, batch 50, seed 0) on the training digits."""
    from stepsize.quantization import TrainingOptions, train_model

    train_model(d, (x, y), options=TrainingOptions(epochs=epochs, lr=1e-3, batch_size=50),
                seed=0)
    return d.eval()


def held_out():
    """The 397 held-out digits and their 4 one-pixel shifts (1985 inputs)."""
    _, (xt, yt) = digits()
    shifts = [xt] + [torch.roll(xt, k, d) for k in (1, -1) for d in (2, 3)]
    return torch.cat(shifts), yt.repeat(5)


def agree_phase(models, deployed, finetune, qat=0):
    rows = {}
    xt, yt = held_out() if "--shifted" in sys.argv else digits()[1]
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            net, q, paths, extra = exports(name, folder, 32, deployed, finetune, qat)
            with torch.no_grad():
                fl, fk = net(xt).numpy(), q(xt).numpy()
            outs = {k: run(p, xt) for k, p in paths.items() if k != "float"}
            acc = lambda o: float((o.argmax(1) == yt.numpy()).mean())  # noqa: E731
            agree = lambda a, b: int((a.argmax(1) != b.argmax(1)).sum())  # noqa: E731
            row = {"n": len(xt), "float_acc": acc(fl), "fake_acc": acc(fk),
                   "ours_acc": acc(outs["ours"]), "peer_acc": acc(outs["peer"]),
                   "ours_vs_fake_diff": agree(outs["ours"], fk),
                   "peer_vs_float_diff": agree(outs["peer"], fl),
                   "fake_vs_float_diff": agree(fk, fl)}
            if "deployed" in extra:
                plain = float_arithmetic(extra["deployed"])
                with torch.no_grad():
                    fd = extra["deployed"](xt).numpy()
                    fp = plain(xt).numpy()
                    fp64 = copy.deepcopy(plain).double()(xt.double()).numpy()
                    fk64 = copy.deepcopy(q).double()(xt.double()).numpy()
                row.update(deployed_fake_acc=acc(fd), deployed_onnx_acc=acc(outs["deployed"]),
                           deployed_onnx_vs_deployed_fake_diff=agree(outs["deployed"], fd),
                           deployed_onnx_equals_deployed_fake=bool(
                               (outs["deployed"] == fd).all()),
                           deployed_onnx_vs_float_arithmetic_diff=agree(outs["deployed"], fp),
                           deployed_fake_vs_fake_diff=agree(fd, fk),
                           deployed_onnx_vs_fake_diff=agree(outs["deployed"], fk),
                           float_arithmetic_float32_vs_float64_diff=agree(fp, fp64),
                           fake_float32_vs_float64_diff=agree(fk, fk64))
            rows[name] = row
            print(name, json.dumps(row), flush=True)
    return rows


def float_arithmetic(deployed):
    """A copy of the deployment model without its kernel emulation: the float32 fake
    arithmetic (a convolution of dequantized values, then ``round(y / s)``) that it used
    before the emulation."""
    from stepsize.quantization._onnx_emulation import strip_emulation

    copied = copy.deepcopy(deployed)
    strip_emulation(copied)
    return copied.eval()


def _without(deployed, kinds):
    """A copy of ``deployed`` with its modules of ``kinds`` replaced by identities; of the
    output quantizers only the calibrated ones and their tied copies (those tied to a layer's
    own LSQ step repeat that layer's quantization: exact)."""
    from stepsize.quantization._onnx_integer import OutputQuantizer

    def calibrated(module):
        while isinstance(module, OutputQuantizer) and module._source:
            module = module._source[0]
        return isinstance(module, OutputQuantizer)

    copied = float_arithmetic(deployed)
    for name, module in list(copied.named_modules()):
        if isinstance(module, kinds) and (not isinstance(module, OutputQuantizer)
                                          or calibrated(module)):
            copied.add_submodule(name, nn.Identity())
    return copied


def sources_phase(models):
    """Argmax differences from the plain fake model on the held-out inputs (``--shifted``:
    1985) of the deployment model and of variants without one of the export's inexact steps."""
    from stepsize.quantization._onnx_integer import OutputQuantizer
    from stepsize.quantization.export import _BiasRounding, deployment_model

    (x, _), _ = digits()
    xt, _ = held_out() if "--shifted" in sys.argv else digits()[1]
    for name in models:
        q = quantized(load(name), x[:64])
        deployed = deployment_model(q, x[:64])
        variants = {
            "deployment model": deployed,
            "calibrated on the held-out inputs too (no clipping)":
                deployment_model(q, torch.cat([x[:64], xt])),
            "calibrated output quantizers removed (bias rounding only)":
                _without(deployed, (OutputQuantizer,)),
            "bias rounding removed (output quantizers only)": _without(deployed, (_BiasRounding,)),
            "both removed": _without(deployed, (OutputQuantizer, _BiasRounding)),
        }
        with torch.no_grad():
            fake = q(xt).argmax(1)
            diffs = {k: int((v(xt).argmax(1) != fake).sum()) for k, v in variants.items()}
        print(name, json.dumps({"n": len(xt), **diffs}), flush=True)


def _code_outputs(path, folder):
    """A copy of the ONNX file at ``path`` whose graph also outputs the uint8 codes of every
    output quantizer (after its Clip, if any), and their quantizer names."""
    import re

    import onnx

    graph_model = onnx.load(str(path))
    readers = {}
    for node in graph_model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    names = []
    for node in graph_model.graph.node:
        found = re.search(r"(output_quantizer_\d+)/", node.name)
        if node.op_type != "QuantizeLinear" or not found:
            continue
        tensor = node.output[0]
        if [r.op_type for r in readers.get(tensor, [])] == ["Clip"]:
            tensor = readers[tensor][0].output[0]
        graph_model.graph.output.append(
            onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.UINT8, None))
        names.append(found.group(1))
    target = Path(folder) / "codes.onnx"
    onnx.save(graph_model, str(target))
    return target, names


def _torch_codes(model, inputs, emulated):
    """{output quantizer name: its codes} of the deployment model on ``inputs``: the values
    after the kernel emulation (``emulated``; a quantizer without one, such as the copy after
    a max pooling, exact anyway: its own) or after the quantizer itself."""
    from stepsize.quantization._onnx_emulation import _Emulation
    from stepsize.quantization._onnx_integer import OutputQuantizer

    names = {id(m): n for n, m in model.named_modules()}
    codes, hooks = {}, []

    def record(module, args, out):
        quantizer = module if isinstance(module, OutputQuantizer) else module._parts[-1]
        if isinstance(quantizer, OutputQuantizer):
            step = quantizer.step().detach()
            codes[names[id(quantizer)]] = torch.round(out / step) + quantizer.zero_point

    for module in model.modules():
        # an emulation runs after its quantizer, so its record replaces the quantizer's
        if isinstance(module, OutputQuantizer) or emulated and isinstance(module, _Emulation):
            hooks.append(module.register_forward_hook(record))
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return codes


def layers_phase(models, count=400):
    """Codes of every output quantizer in onnxruntime's integer kernels against the deployment
    model's on the first ``count`` held-out inputs: with its kernel emulation, and with the
    float32 fake arithmetic (convolution of dequantized values, then round(y / s))."""
    from stepsize.quantization.export import deployment_model

    (x, _), _ = digits()
    xt = held_out()[0][:count]
    for name in models:
        q = quantized(load(name), x[:64])
        deployed = deployment_model(q, x[:64])
        with tempfile.TemporaryDirectory() as folder:
            path = export_onnx(deployed, Path(folder) / "d.onnx", x[:1], integer_kernels=True)
            target, names = _code_outputs(path, folder)
            outs = run_all(target, xt)
        emulated = _torch_codes(deployed, xt, True)
        plain = _torch_codes(float_arithmetic(deployed), xt, False)
        rows = []
        for index, quantizer in enumerate(names):
            ort = torch.from_numpy(outs[1 + index].astype("float32"))
            rows.append((quantizer, tuple(ort.shape), int((ort != emulated[quantizer]).sum()),
                         int((ort != plain[quantizer]).sum())))
        first = next((r for r in rows if r[3]), None)
        seconds = _eval_seconds({"emulated": deployed, "float32": float_arithmetic(deployed)},
                                xt)
        print(name, json.dumps({"inputs": count, "quantizers": len(rows),
                                "eval_seconds_median_of_3": seconds,
                                "codes": sum(math.prod(r[1]) for r in rows),
                                "emulated_code_diffs": sum(r[2] for r in rows),
                                "float_arithmetic_code_diffs": sum(r[3] for r in rows),
                                "float_first_differing_quantizer": first,
                                "float_last_quantizer": rows[-1]}), flush=True)
        if first is not None:
            print("  at the first differing code:", json.dumps(_tie(deployed, xt, first[0],
                                                               plain[first[0]], outs, names)))
        for row in rows:
            print("  ", *row, flush=True)


def _eval_seconds(models, x, repeats=3):
    """Median wall time of one eval forward of each model on ``x``, interleaved."""
    import statistics
    import time

    times = {k: [] for k in models}
    for _ in range(repeats):
        for key, model in models.items():
            start = time.perf_counter()
            with torch.no_grad():
                model(x)
            times[key].append(time.perf_counter() - start)
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def _tie(deployed, xt, quantizer, plain_codes, outs, names):
    """At the first code where the float32 fake arithmetic and onnxruntime differ: ``y / s``
    before rounding as the kernel computes it (``f32(acc + b) * M``) and as the float32
    fake arithmetic does (``y / s`` of the convolution of dequantized values), the codes."""
    from stepsize.quantization._onnx_emulation import KernelOutput, _f32

    module = next(m for m in deployed.modules() if isinstance(m, KernelOutput)
                  and m._parts[2] is deployed.get_submodule(quantizer))
    ort = torch.from_numpy(outs[1 + names.index(quantizer)].astype("float32"))
    where = tuple(torch.nonzero(ort != plain_codes)[0].tolist())
    seen = {}
    hooks = [module.register_forward_hook(lambda m, args, out: seen.update(x=args[1])),
             module._parts[2].register_forward_hook(lambda m, args, out: seen.update(y=args[0]))]
    with torch.no_grad():
        float_arithmetic(deployed)(xt[where[0]:where[0] + 1])  # the quantizer's float input
        plain_y = seen["y"]
        deployed(xt[where[0]:where[0] + 1])
    for hook in hooks:
        hook.remove()
    total, scale = module.accumulator(seen["x"])
    step = _f32(module._parts[2].step())
    index = (0,) + where[1:]
    return {"quantizer": quantizer, "element": list(where),
            "kernel_y_over_s": float((total.float() * (scale / step))[index]),
            "float32_y_over_s": float((plain_y / step)[index]),
            "onnxruntime_code": int(ort[where]), "float32_code": int(plain_codes[where])}


def kernels_phase(models):
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            _, _, paths, _ = exports(name, folder, 32)
            for k in ("ours", "peer"):
                print(name, k, json.dumps(dict(sorted(onnx_kernels(paths[k]).items()))),
                      flush=True)


def profile_phase(models, threads=1, runs=30):
    """onnxruntime's per-operator kernel time (its profiler: the mean over ``runs`` batch-1
    runs at 224x224 after a dropped first run) of the float, ours and peer models, by
    operator type."""
    import collections

    import onnxruntime

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)).numpy()
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            _, _, paths, _ = exports(name, folder, 224)
            for kind in ("float", "ours", "peer"):
                options = onnxruntime.SessionOptions()
                options.enable_profiling, options.log_severity_level = True, 3
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.profile_file_prefix = str(Path(folder) / "profile")
                session = onnxruntime.InferenceSession(str(paths[kind]), options,
                                                       providers=["CPUExecutionProvider"])
                for _ in range(runs + 1):  # the first (cold) run is dropped below
                    session.run(None, {"input": x})
                events = json.loads(Path(session.end_profiling()).read_text())
                per_op, seen = collections.Counter(), set()
                for event in events:
                    if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                        if event["name"] in seen:
                            per_op[event["args"]["op_name"]] += event["dur"] / runs
                        seen.add(event["name"])
                ops = {op: round(us) for op, us in per_op.most_common()}
                print(f"{name} {kind} us/run total {round(sum(per_op.values()))}: "
                      f"{json.dumps(ops)}", flush=True)


def speed_phase(models, batches=(1, 32), threads=(1, 2)):
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            _, _, paths, _ = exports(name, folder, 224)
            for batch in batches:
                x = torch.randn(batch, 3, 224, 224,
                                generator=torch.Generator().manual_seed(1)).numpy()
                for t in threads:
                    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout
                    times = onnx_latencies({k: str(v) for k, v in paths.items()}, x, threads=t,
                                           repeats=9 if batch == 1 else 3,
                                           spinning="--no-spin" not in sys.argv)
                    ms = {k: round(1e3 * v, 1) for k, v in times.items()}
                    print(f"{name} batch {batch} threads {t}: {ms} ours "
                          f"{times['float'] / times['ours']:.2f}x peer "
                          f"{times['float'] / times['peer']:.2f}x | load "
                          f"{load.split('average:')[1].strip()}", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    models = ["resnet18", "mobilenet_v2"]
    if "--models" in args:
        models = args[args.index("--models") + 1].split(",")
    finetune = int(args[args.index("--finetune") + 1]) if "--finetune" in args else 0
    qat = int(args[args.index("--qat") + 1]) if "--qat" in args else 0
    deployed = "--deployed" in args or finetune > 0 or qat > 0
    for phase in ("train", "agree", "layers", "sources", "kernels", "profile", "speed"):
        if phase in args:
            print(f"== {phase} ({os.popen('date -u').read().strip()})", flush=True)
            if phase == "train":
                for name in models:
                    if not (CACHE / f"{name}.pt").exists():
                        train(name)
            elif phase == "agree":
                agree_phase(models, deployed, finetune, qat)
            elif phase == "layers":
                layers_phase(models)
            elif phase == "sources":
                sources_phase(models)
            elif phase == "kernels":
                kernels_phase(models)
            elif phase == "profile":
                profile_phase(models)
            else:
                speed_phase(models)
