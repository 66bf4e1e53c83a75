"""What `vggspec run eval` and `vggspec run features` ask the runtime for (runtime/eval/run.py
runs it, each job in its own package): plain dataclasses, free of torch, whose defaults are
the command line's too."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.scale import TrainScale

MAX_ASPECT = 3.0  # rescaled long side ≤ 3 × short side; a 4:3 photo is far from it


@dataclass
class NetsRequest:
    """Which nets: training runs' checkpoints, or weights from elsewhere with their specs
    (several of either are fused), and how to read them."""

    checkpoints: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)  # per --weights; or a check per checkpoint
    preprocess: str | None = None  # "caffe", "torchvision" or "vggspec"
    classes: str | None = None  # a file of class names in output order
    train_scale: TrainScale | None = None  # S or [S_min, S_max] of the weights
    scales: list[int] | None = None  # test scales Q; None: from each net's training scale
    backend: str = "auto"
    engine: str = "torch"  # torch, onnxruntime, openvino, or auto (the fastest that agrees)
    precision: str = "fp32"  # fp32, bf16, or auto (bf16 where the device has it natively)


@dataclass
class ImagesRequest:
    """Which images and how they are read."""

    data: str  # an ImageFolder root
    split: str = "val"
    flip: bool = True
    max_bad_files: float = 0.1
    max_aspect: float = MAX_ASPECT
    batch: int = 32  # images per batch at most
    workers: int | None = None  # data-loading processes; None: by the cores (default_workers)
    reduced_decode: bool = False  # JPEGs at a DCT reduction ≥ their test size (ImageFolder)


@dataclass
class Processes:
    """Where a job runs: on this process, or in `nproc` torchrun workers that rerun the
    command line `argv` (runtime/dist/launch.py `relaunch`)."""

    nproc: int = 1
    device: str = "auto"
    threads: int | None = None  # torch threads per process; None: cores / processes
    argv: list[str] = field(default_factory=list)
    from_parent: dict = field(default_factory=dict)  # what a --nproc parent settled
    command: str = "eval"  # `run COMMAND`, as the output locks name their holder


@dataclass
class EvalRequest:
    nets: NetsRequest
    images: ImagesRequest
    method: str = "dense"  # see protocol.CHOICES
    grid: int = 5
    posteriors: str | None = None  # an .npz to write every image's posteriors to
    output: str | None = None  # a file to write the JSON report to
    processes: Processes = field(default_factory=Processes)

    def outputs(self) -> list[tuple[str, bool]]:
        """(path, is a folder) of what the job writes, locked while it runs."""
        return [(path, False) for path in (self.output, self.posteriors) if path]


@dataclass
class FeaturesRequest:
    nets: NetsRequest
    images: ImagesRequest
    out: str
    aggregate: str = "stack"
    layer: str | None = None  # a named layer (relu5_3) instead of the penultimate one
    classifier: str | None = None
    train_split: str = "train"
    reg: float = 1.0
    processes: Processes = field(default_factory=lambda: Processes(command="features"))

    def outputs(self) -> list[tuple[str, bool]]:
        return [(self.out, True)]


PROTOCOLS = ("centre", "dense", "both")


@dataclass
class LocRequest:
    """Localisation (Appendix A): the localisation nets (`nets`, several fused by the union of
    their boxes), the classification net that names protocol 2's top-5 classes, and where the
    images' box annotations are (None: ROOT/annotations/SPLIT)."""

    nets: NetsRequest
    images: ImagesRequest
    protocol: str = "dense"  # centre (protocol 1, Table 8), dense (protocol 2, Table 9), both
    classifier: str | None = None  # a classification run or its model file
    boxes: str | None = None  # a folder of VOC XML files, or a .json/.csv box table
    output: str | None = None  # a file to write the JSON report (its results) to
    processes: Processes = field(default_factory=Processes)

    def outputs(self) -> list[tuple[str, bool]]:
        return [(self.output, False)] if self.output else []
