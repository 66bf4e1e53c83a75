"""One spec through a backend and through the torch backend, same weights and draws: the errors."""

from __future__ import annotations

import contextlib

import torch
from vggspec.compiler.lowering.autotune import relative_error
from vggspec.compiler.lowering.net import Net, build, densify, head_task

BATCH = 2


def _inputs(net: Net, device, seed: int, dtype=None):
    """Images and their training targets (labels, or a class and a box)."""
    g = torch.Generator().manual_seed(seed)
    h, w = net.input_size
    x = torch.randn(BATCH, 3, h, w, generator=g)
    classes = net.num_classes or 1
    target = head_task(net.spec).random_target(BATCH, classes, generator=g)
    return x.to(device, dtype), target.to(device)


def run_net(
    net: Net, device, seed: int = 0, autocast: bool = False, dtype=None
) -> dict[str, torch.Tensor]:
    """A training forward (dropout drawn from `seed`) and backward of the loss, then the
    dense twin's prediction in eval mode (FC layers as convs, spatial mean, soft-max): every
    output and gradient. `dtype`: the images' (default fp32)."""
    x, target = _inputs(net, device, seed, dtype)
    kind = torch.device(device).type

    def mixed():
        return torch.autocast(kind, torch.bfloat16) if autocast else contextlib.nullcontext()

    net.train()
    torch.manual_seed(seed)
    with mixed():
        scores = net(x)
    loss = net.loss(scores, target)
    params = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in params])
    net.eval()
    with torch.no_grad(), mixed():
        dense = densify(net).predict(x)  # the twin shares the net's backend
    out = {"scores": scores, "loss": loss, "dense predict": dense}
    out.update({f"d {name}": g for (name, _), g in zip(params, grads, strict=True)})
    return {k: v.detach().float() for k, v in out.items()}


def twin_nets(spec, backend, device, seed: int = 0) -> tuple[Net, Net]:
    """(torch net, net on `backend`) holding the same weights; `backend` is a name or a
    backend instance."""
    torch.manual_seed(seed)
    reference = build(spec, "torch", dropout=0.5).to(device)
    net = Net(reference.graph, backend, dropout=0.5)
    net.load_state_dict(reference.state_dict())
    return reference, net.to(device)


def _before_batch_norm(names) -> set[str]:
    """The gradients of biases a BN follows (conv3_1.bias before bn3_1): BN takes the mean
    out, so they are zero but for rounding, and no relative error of theirs means anything."""
    norms = {name.split(".")[0][len("d bn") :] for name in names if name.startswith("d bn")}
    return {f"d {kind}{n}.bias" for n in norms for kind in ("conv", "fc")} & set(names)


def worst_error(got: dict, want: dict) -> tuple[float, str]:
    """The largest max|a - b| / max|b| over the tensors, and which tensor has it; a bias
    before BN is measured against the largest gradient of the net instead."""
    assert got.keys() == want.keys(), (sorted(got), sorted(want))
    zero = _before_batch_norm(want)
    errors = {name: relative_error(got[name], want[name]) for name in want if name not in zero}
    scale = max(want[n].abs().max().item() for n in want if n.startswith("d ") and n not in zero)
    for name in zero:
        errors[name] = (got[name] - want[name]).abs().max().item() / scale
    name = max(errors, key=errors.get)
    return errors[name], name
