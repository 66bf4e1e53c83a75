"""gpu-check's measured sections as units: conv layers against cuDNN, the training step, dense
evaluation, and every spec of specs/ through the auto backend against the torch backend."""

from __future__ import annotations

import contextlib
import time

import torch
from vggspec.compiler import compile_spec, load_spec
from vggspec.compiler.errors import VggspecError
from vggspec.compiler.kernels.aot import aot_report, roofline_seconds
from vggspec.compiler.kernels.shapes import ConvLaunch
from vggspec.compiler.lowering.backends import auto
from vggspec.compiler.lowering.launches import graph_launches
from vggspec.compiler.lowering.net import build, densify
from vggspec.compiler.targets import GPUS, KERNEL_DTYPE

from bench.gpu_plan import Unit
from bench.kernels import DTYPES, conv_cases
from bench.spec_conformance import run_net, twin_nets, worst_error
from bench.toy_specs import spec_files, toy_spec

# The spec section compares whole nets in fp32 with TF32 off: under bf16 autocast every
# layer rounds to 8 bits on both sides, differently, and a deep net's outputs and gradients
# then differ by 1e-2 to 1 of their largest value (measured on the toy specs), which no bound
# separates from a wrong kernel. In fp32 the Triton kernels agree with torch to ~1e-6 on the
# CPU; 1e-3 leaves room for cuDNN's own algorithms (Winograd, FFT) on a GPU.
SPEC_TOLERANCE = 1e-3
_PASS = {"conv_fwd": "fwd", "conv_dgrad": "dgrad"}


@contextlib.contextmanager
def without_tf32():
    """fp32 GEMMs in full fp32, in cuDNN and in the Triton kernels (they follow torch's flags)."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def predicted(launches, dtype: str, target: str, estimate: bool) -> list[dict]:
    """Per training kernel of the launches: layer, kernel, the roofline bound and (with
    `estimate`, from the compiled kernels, which the plan section has compiled) the
    estimate; without it the estimate is None and nothing is compiled."""
    if estimate:
        return aot_report(launches, target, dtype, training=True)
    gpu, kdtype = GPUS[target], KERNEL_DTYPE[dtype]
    return [
        {
            "layer": launch.name,
            "kernel": plan.kind,
            "roofline_s": roofline_seconds(plan, kdtype, gpu)[0],
            "estimate_s": None,
        }
        for launch in launches
        for plan in launch.plans(kdtype, training=True)
    ]


def _sum(values):
    return None if None in values else sum(values)


def _per_pass(rows: list[dict]) -> dict:
    """(layer name, pass) → (roofline, estimate) seconds (wgrad with its split-K sums)."""
    out = {}
    for r in rows:
        out.setdefault((r["layer"], _PASS.get(r["kernel"], "wgrad")), []).append(r)
    return {
        key: (sum(r["roofline_s"] for r in rs), _sum([r["estimate_s"] for r in rs]))
        for key, rs in out.items()
    }


def layer_units(check) -> list[Unit]:
    """Triton's fwd, dgrad and wgrad of each conv layer of the spec against cuDNN."""
    graph = compile_spec(load_spec(check.spec))
    launches, _ = graph_launches(graph, check.sizes.layer_batch, training=True)
    layers = [x for x in launches if isinstance(x, ConvLaunch)][: check.sizes.layers]
    predictions = {}

    def times(layer, dtype, kernel):
        if dtype not in predictions:
            rows = predicted(layers, dtype, check.target, check.planned)
            predictions[dtype] = _per_pass(rows)
        return predictions[dtype][layer.name, kernel]

    units = []
    for dtype in check.sizes.layer_dtypes:
        for layer in layers:
            for kernel in ("fwd", "dgrad", "wgrad"):
                if kernel == "dgrad" and not layer.input_grad:
                    continue  # the first layer's input is the image
                units.append(
                    Unit(
                        "layers",
                        f"{layer.name} {kernel} {dtype}",
                        dtype,
                        triton=lambda where, la=layer, d=dtype, k=kernel: conv_cases(
                            la, DTYPES[d], where
                        )[k][0](),
                        run=lambda la=layer, d=dtype, k=kernel: [
                            _time_layer(check, la, d, k, times(la, d, k))
                        ],
                    )
                )
    return units


def _time_layer(check, layer: ConvLaunch, dtype: str, kernel: str, predicted) -> dict:
    flops = 2 * layer.batch * layer.h * layer.w * layer.c_out * layer.c_in * 9
    roofline, estimate = predicted
    check.reset_peak()
    ours, ref = conv_cases(layer, DTYPES[dtype], check.device)[kernel]
    t_ours, t_ref = check.time_ms(ours), check.time_ms(ref)
    return {
        "layer": layer.name,
        "batch": layer.batch,
        "dtype": dtype,
        "kernel": kernel,
        "triton_tflops": flops / t_ours / 1e9,
        "cudnn_tflops": flops / t_ref / 1e9,
        "speed_vs_cudnn": t_ref / t_ours,
        "roofline_tflops": flops / roofline / 1e12,
        "estimate_tflops": None if estimate is None else flops / estimate / 1e12,
        "peak_gib": check.peak_gib(),
    }


class _TrialsThenTriton:
    """A tuner for recording auto on shape-only tensors: it runs each call's Triton trial
    (what auto launches while it measures on a GPU: its output gradient is laid out as the
    output, which need not be how the net hands it back) and then takes triton."""

    def choose(self, signature, precision, device, sides, shared=False) -> str:
        sides["triton"]()
        return "triton"


def _meta_net(spec, dtype=torch.bfloat16, dense: bool = False, backend: str = "triton"):
    """A triton (or auto) net of `spec` on shape-only tensors in `dtype` (bf16: as autocast
    hands the kernels bf16 operands)."""
    chosen = auto.Backend(_TrialsThenTriton()) if backend == "auto" else backend
    with torch.device("meta"):
        net = build(spec, chosen)
    net = net.to(dtype=dtype)
    return densify(net) if dense else net


def _record_step(spec, batch: int, backend: str) -> None:
    net = _meta_net(spec, backend=backend).train()
    x = torch.empty(batch, 3, *net.input_size, device="meta", dtype=torch.bfloat16)
    y = torch.empty(batch, device="meta", dtype=torch.long)
    net.loss(net(x), y).backward()


def _net(check, backend: str):
    torch.manual_seed(0)
    spec = load_spec(check.spec)
    chosen = auto.Backend(check.tuner) if backend == "auto" else backend
    return build(spec, chosen, name="check").to(check.device)


def step_units(check) -> list[Unit]:
    """Images/s of a bf16-autocast SGD step per backend, against the AOT roofline bound and
    the estimate of the same step."""
    units = []
    spec = load_spec(check.spec)
    for batch in check.sizes.step_batches:
        for backend in ("torch", "triton", "auto"):
            units.append(
                Unit(
                    "step",
                    f"batch {batch} {backend}",
                    "bf16",
                    triton=(lambda where: None)
                    if backend == "torch"
                    else (lambda where, b=batch, name=backend: _record_step(spec, b, name)),
                    run=lambda b=batch, name=backend: [_time_step(check, b, name)],
                )
            )
    return units


def _time_step(check, batch: int, backend: str) -> dict:
    graph = compile_spec(load_spec(check.spec))
    launches, _ = graph_launches(graph, batch, training=True)
    rows = predicted(launches, "bf16", check.target, check.planned)
    roofline = sum(r["roofline_s"] for r in rows)
    estimate = _sum([r["estimate_s"] for r in rows])
    device = check.device
    net = _net(check, backend).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(batch, 3, *net.input_size, generator=g, device=device)
    y = torch.randint(0, net.num_classes, (batch,), generator=g, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = net.loss(net(x), y)
        loss.backward()
        opt.step()

    check.reset_peak()
    for _ in range(check.sizes.warmup):  # the auto backend measures in its first step
        step()
    check.synchronize()
    start = time.perf_counter()
    for _ in range(check.sizes.steps):
        step()
    check.synchronize()
    seconds = (time.perf_counter() - start) / check.sizes.steps
    return {
        "batch": batch,
        "backend": backend,
        "images_per_s": batch / seconds,
        "roofline_images_per_s": batch / roofline,
        "estimate_images_per_s": None if estimate is None else batch / estimate,
        "fraction_of_roofline": roofline / seconds,
        "peak_gib": check.peak_gib(),
    }


def dense_units(check) -> list[Unit]:
    """Images/s of the dense twin (FC layers as convs) at Q×Q under bf16 autocast."""
    spec = load_spec(check.spec)
    q, batch = check.sizes.dense_q, check.sizes.dense_batch

    def record(where):
        twin = _meta_net(spec, dense=True).eval()
        with torch.no_grad():
            twin.predict(torch.empty(batch, 3, q, q, device="meta", dtype=torch.bfloat16))

    return [
        Unit(
            "dense",
            f"Q {q} {backend}",
            "bf16",
            triton=(lambda where: None) if backend == "torch" else record,
            run=lambda name=backend: [_time_dense(check, name)],
        )
        for backend in ("torch", "triton")
    ]


def _time_dense(check, backend: str) -> dict:
    q, batch, device = check.sizes.dense_q, check.sizes.dense_batch, check.device
    twin = densify(_net(check, backend)).eval()
    x = torch.randn(batch, 3, q, q, device=device)

    def run():
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            return twin.predict(x)

    check.reset_peak()
    run()
    ms = check.time_ms(run)
    return {
        "backend": backend,
        "q": q,
        "batch": batch,
        "images_per_s": batch / ms * 1e3,
        "peak_gib": check.peak_gib(),
    }


def spec_units(check) -> list[Unit]:
    """Every spec of specs/ (at toy size in a dry run; those named by --specs) through auto
    against torch, fp32 without TF32: a training forward and backward, then the dense
    twin's prediction."""
    units = []
    for path in spec_files():
        if check.spec_names and path.name not in check.spec_names:
            continue
        try:
            spec = load_spec(path)
            if check.dry_run:
                spec = toy_spec(spec)
        except VggspecError as err:  # that spec's unit fails; the others run
            units.append(Unit("specs", path.name, "fp32", triton=_nothing, run=_raise(err)))
            continue

        def record(where, spec=spec):
            with without_tf32():
                run_net(_meta_net(spec, torch.float32, backend="auto"), "meta")

        units.append(
            Unit(
                "specs",
                path.name,
                "fp32",
                triton=record,
                run=lambda spec=spec, name=path.name: [_check_spec(check, spec, name)],
            )
        )
    return units


def _nothing(where) -> None:
    return None


def _raise(err: Exception):
    def run():
        raise err

    return run


def _check_spec(check, spec, name: str) -> dict:
    measured = check.tuner.measured
    reference, net = twin_nets(spec, auto.Backend(check.tuner), check.device)
    with without_tf32():
        got, want = run_net(net, check.device), run_net(reference, check.device)
    error, where = worst_error(got, want)
    finite = all(bool(torch.isfinite(t).all()) for t in got.values())
    return {
        "spec": name,
        "backend": "auto",
        "ok": finite and error <= SPEC_TOLERANCE,
        "error": error,
        "worst": where,
        "tol": SPEC_TOLERANCE,
        "measured": check.tuner.measured - measured,
        "input": "x".join(map(str, net.input_size)),
    }
