"""How one net of an evaluation is computed: the engine and precision asked for or, with
`auto`, the fastest of the installed candidates that agree with torch in fp32 on a few
images, measured before the first pass (as the GPU `auto` backend chooses its kernels) and
kept for all of that net's passes."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from vggspec.compiler.lowering.inference import native_bf16, resolve_precision

from . import EngineError, engine, installed

# Agreement with torch in fp32: max |difference| / max |torch|, as the GPU auto backend.
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}
TIMED_ROUNDS = 2  # after one untimed first run; each candidate in turn, each round
# A candidate whose first timed run took more than this many times the fastest one's is not
# timed again: it cannot win.
OUT_OF_THE_RUNNING = 2.0


def quiet(_message: str) -> None:
    pass


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    scale = reference.abs().max().item() or 1.0
    return (got.float() - reference).abs().max().item() / scale


class Served:
    """A net whose outputs an engine computes: `served(x)` the outputs (float32), `predict(x)`
    the net's own head over them (spatial mean, soft-max), as `Net.predict`."""

    def __init__(self, net, run: Callable[[torch.Tensor], torch.Tensor], label: str):
        self.net, self.run, self.label = net, run, label

    @property
    def input_size(self) -> tuple[int, int]:
        return self.net.input_size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.head_output(self.run(x))


class Serving:
    """The engine of one net of an evaluation: `choose(net, sample)` decides it, then
    `serve(net)` gives each of its forms (dense twin, classifier, feature cut) on that
    engine, compiled once."""

    def __init__(
        self,
        engine: str = "torch",
        precision: str = "fp32",
        device: str | torch.device = "cpu",
    ):
        self.engine, self.precision = engine, precision
        self.device = torch.device(device)
        self.chosen: tuple[str, str] | None = None
        self._served: dict[int, tuple[object, Served]] = {}

    def candidates(self) -> list[tuple[str, str]]:
        """(engine, precision) pairs to consider, the preferred first. `auto` precision
        allows bf16 where the device has it natively (and fp32); a named engine takes its
        first allowed precision, `auto` engine every installed one (CPU only, but torch)."""
        if self.precision == "auto":
            allowed = ["bf16", "fp32"] if native_bf16(self.device) else ["fp32"]
        else:
            allowed = [resolve_precision(self.precision, self.device)]
        if self.engine != "auto":
            names = [self.engine]
        elif self.device.type == "cpu":
            names = installed()
        else:
            names = ["torch"]
        found = [(n, p) for n in names for p in allowed if p in engine(n).PRECISIONS]
        if not found:
            raise EngineError(
                f"{self.engine} computes {' or '.join(engine(self.engine).PRECISIONS)} only: "
                "use --precision fp32 (or auto), or another --engine"
            )
        return found if self.engine == "auto" else found[:1]

    def choose(self, net, sample: torch.Tensor, say: Callable[[str], None] = quiet) -> None:
        """Decide the engine now, measuring `net` on `sample` (a few images) when there is a
        choice. Under torch.distributed this is a collective: every rank calls it for the
        same nets in the same order, before any image (ranks hold different images, some
        none), and every rank takes rank 0's choice, so that an image's result does not
        depend on which rank measured what."""
        if self.chosen is not None:
            return
        candidates = self.candidates()
        choice, run = candidates[0], None
        if len(candidates) > 1:
            shared = _distributed()
            if not shared or torch.distributed.get_rank() == 0:
                choice, run = _measure(net, sample, candidates, say)
            if shared:
                held = [choice]
                torch.distributed.broadcast_object_list(held, src=0)
                choice = tuple(held[0])
        self.chosen = choice
        if run is not None:
            self._served[id(net)] = (net, Served(net, run, " ".join(choice)))

    def serve(self, net, sample: torch.Tensor | None = None, say=quiet) -> Served:
        """`net` on this net's engine, compiled once. Not yet chosen, the choice is made
        now on `sample` (in one process only: under torch.distributed, `choose` first)."""
        held = self._served.get(id(net))
        if held is not None and held[0] is net:
            return held[1]
        if self.chosen is None:
            if _distributed() and len(self.candidates()) > 1:
                raise RuntimeError("under torch.distributed, Serving.choose comes first")
            self.choose(net, sample, say)
            return self.serve(net)
        name, precision = self.chosen
        served = Served(net, _compile(name, net, precision), f"{name} {precision}")
        self._served[id(net)] = (net, served)
        return served

    @property
    def label(self) -> str:
        """ "engine precision" as chosen, or as asked before anything ran."""
        if self.chosen is not None:
            return " ".join(self.chosen)
        return f"{self.engine} {self.precision}"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _compile(name: str, net, precision: str):
    return engine(name).compile(net, precision, torch.get_num_threads())


@torch.inference_mode()
def _measure(net, sample: torch.Tensor, candidates, say):
    """The fastest candidate on `sample` among those that agree with torch fp32, and its
    compiled run of `net` (the others are let go, and their engines' threads with them).
    A candidate that cannot run here (its export cannot be kept, its engine fails) is
    passed over, as one that disagrees is: torch can always run."""
    reference = net(sample).float()
    runs, notes, seconds = {}, [], {}
    for candidate in candidates:
        label = " ".join(candidate)
        try:
            run = _compile(candidate[0], net, candidate[1])
            # Untimed: a first run sets up (kernels, buffers, lazy compiles), which would
            # count against the engines that set up late, and has nothing to do with speed.
            error = relative_error(run(sample), reference)
        except Exception as err:  # any engine's failure: that engine is out
            notes.append(f"{label} failed: {(str(err).splitlines() or [type(err).__name__])[0]}")
            continue
        if error > TOLERANCE[candidate[1]]:
            notes.append(f"{label} disagrees ({error:.1e})")
        else:
            runs[candidate] = run
    for c, run in runs.items():
        seconds[c] = _seconds(run, sample)
    fastest = min(seconds.values(), default=0.0)
    timed = {c: run for c, run in runs.items() if seconds[c] <= OUT_OF_THE_RUNNING * fastest}
    for _ in range(TIMED_ROUNDS - 1):
        for c, run in timed.items():
            seconds[c] = min(seconds[c], _seconds(run, sample))
    if not runs:  # every candidate disagrees: torch at the precision asked for
        say(f"engine auto: {'; '.join(notes)}; taking torch")
        return ("torch", candidates[0][1]), None
    best = min(seconds, key=seconds.get)
    n = sample.shape[0]
    rates = [
        f"{' '.join(c)} {n / s:.1f}" + ("" if c in timed else " (one run)")
        for c, s in sorted(seconds.items(), key=_second)
    ]
    say(
        f"engine auto: {' '.join(best)} (images/s on {n} of {sample.shape[-2]}x"
        f"{sample.shape[-1]}: {', '.join(rates + notes)})"
    )
    return best, runs[best]


def _seconds(run, sample: torch.Tensor) -> float:
    """Wall time of one run, to its end: on a GPU, not only its launches (which return at
    once, whatever the kernels then take)."""
    cuda = sample.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(sample.device)
    started = time.perf_counter()
    run(sample)
    if cuda:
        torch.cuda.synchronize(sample.device)
    return time.perf_counter() - started


def _second(item):
    return item[1]
