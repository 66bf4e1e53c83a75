"""What a net's outputs stand for: the task its last op gives (Head.task). Data, training,
validation and evaluation ask the task, never which head a net has."""

from __future__ import annotations

TOP_K = 5  # the paper's top-5 error


class Task:
    """A kind of target, its loss, how the classifier is sized for the data's classes and
    what its outputs stand for. The defaults are classification's."""

    def pick(self, *, labels, boxes):
        """The one of the given values that belongs to this task's kind of target: class
        labels or boxes. Every caller names one for each kind, so that a new kind of task
        makes each of them say what it does for it (a missing keyword is an error)."""
        raise NotImplementedError

    def width(self, classifier, classes: int) -> int:
        """The width the classifier (the spec's last resizable layer) takes for `classes`."""
        return classes

    def misfit(self, classifier, classes: int) -> str | None:
        """Why the spec's classifier, as written, cannot be trained on data of `classes`
        classes, or None (a classifier is resized to the data)."""
        return None

    def classes(self, outputs: int) -> int | None:
        """How many classes `outputs` outputs stand for (None: they are not per class)."""
        return outputs

    def random_target(self, n: int, classes: int, device=None, dtype=None, generator=None):
        """A random training target for `n` images (a memory probe's, a conformance run's)."""
        import torch

        return torch.randint(classes, (n,), generator=generator, device=device)

    def loss(self, scores, target, backend):
        """The training loss of the net's output `scores` against `target`: its batch mean."""
        raise NotImplementedError


class Classification(Task):
    """The paper's task: a class label per image, soft-max cross-entropy, selected by top-1."""

    def pick(self, *, labels, boxes):
        return labels

    def correct(self, scores, labels, k: int = TOP_K) -> tuple[int, int]:
        """(top-1 correct, top-k correct) of scores (n, classes), of any monotonic kind
        (logits, posteriors), against integer labels (n,); k is capped at the number of
        classes. The one count that training's validation and the test protocol share."""
        if len(labels) == 0:
            return 0, 0
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        hits = top.eq(labels.to(top.device)[:, None])
        return int(hits[:, 0].sum()), int(hits.any(dim=1).sum())

    def loss(self, scores, target, backend):
        return backend.cross_entropy(scores, target)


CLASSIFICATION = Classification()
