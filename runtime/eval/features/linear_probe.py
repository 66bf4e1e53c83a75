"""Linear classifiers on fixed features (Appendix B): ridge regression in closed form, a
multinomial logistic regression and a one-vs-rest linear SVM (squared hinge, as
LIBLINEAR's default) fitted with L-BFGS in torch; scikit-learn's LinearSVC if installed."""

from __future__ import annotations

import numpy as np
import torch

from ..models import EvalError

CHOICES = ("ridge", "logistic", "svm", "sklearn-svm")


def _with_bias(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x, dtype=np.float64))
    return torch.cat([t, torch.ones(len(t), 1, dtype=t.dtype)], dim=1)


def _ridge(x: torch.Tensor, y: torch.Tensor, classes: int, reg: float) -> torch.Tensor:
    """argmin ||XW − T||² + reg·||W||² with T one-vs-rest ±1 targets; the primal or the dual
    system, whichever is smaller (the bias column is regularised too; it hardly matters)."""
    targets = -torch.ones(len(y), classes, dtype=x.dtype)
    targets[torch.arange(len(y)), y] = 1
    n, d = x.shape
    if d <= n:
        return torch.linalg.solve(x.T @ x + reg * torch.eye(d, dtype=x.dtype), x.T @ targets)
    return x.T @ torch.linalg.solve(x @ x.T + reg * torch.eye(n, dtype=x.dtype), targets)


def _lbfgs(x: torch.Tensor, y: torch.Tensor, classes: int, reg: float, loss_name: str):
    w = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], max_iter=500, tolerance_grad=1e-9, history_size=20, line_search_fn="strong_wolfe"
    )
    signs = -torch.ones(len(y), classes, dtype=x.dtype)
    signs[torch.arange(len(y)), y] = 1

    def closure():
        optimizer.zero_grad()
        scores = x @ w
        if loss_name == "logistic":
            data = torch.nn.functional.cross_entropy(scores, y, reduction="sum")
        else:  # one-vs-rest squared hinge
            data = torch.clamp(1 - signs * scores, min=0).pow(2).sum()
        loss = data + 0.5 * reg * w[:-1].pow(2).sum()  # the bias is not penalised
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def require_sklearn():
    """scikit-learn's LinearSVC, or a clear error (checked before any extraction)."""
    try:
        from sklearn.svm import LinearSVC
    except ImportError:
        raise EvalError(
            "--classifier sklearn-svm needs scikit-learn (pip install 'vggspec[svm]'); "
            "--classifier svm is the same model without it"
        ) from None
    return LinearSVC


def fit_and_score(
    kind: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    classes: int,
    reg: float = 1.0,
) -> dict:
    """Fit on train, return {"classifier", "reg", "train_accuracy", "test_accuracy",
    "mean_class_recall"} on test (the paper reports mean class recall for Caltech)."""
    if kind not in CHOICES:
        raise EvalError(f"unknown classifier {kind!r}: choose {', '.join(CHOICES)}")
    if len(train_y) == 0 or len(test_y) == 0:
        raise EvalError("a linear classifier needs images in both the train and the test split")
    if kind == "sklearn-svm":
        model = require_sklearn()(C=1.0 / reg).fit(train_x, train_y)
        predict = model.predict
    else:
        torch.manual_seed(0)
        x = _with_bias(train_x)
        y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
        w = _ridge(x, y, classes, reg) if kind == "ridge" else _lbfgs(x, y, classes, reg, kind)

        def predict(features):
            return (_with_bias(features) @ w).argmax(dim=1).numpy()

    train_pred, test_pred = predict(train_x), predict(test_x)
    recalls = [float(np.mean(test_pred[test_y == c] == c)) for c in np.unique(test_y)]
    return {
        "classifier": kind,
        "reg": reg,
        "train_accuracy": float(np.mean(train_pred == train_y)),
        "test_accuracy": float(np.mean(test_pred == test_y)),
        "mean_class_recall": float(np.mean(recalls)),
    }
