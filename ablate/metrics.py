"""Metrics computed at evaluation from the test logits and labels, in a registry open to
plugins: each is stored per evaluated epoch like test_acc, and its value at a run's last
evaluated epoch is what ``compare --metric``, claims and figures take.

Imports no torch at module level: ``ablate report`` and ``compare`` read the names only.
A metric function takes (logits [N, C] float, labels [N] int64, num_classes) on any device
and returns a float, or a dict of floats named ``NAME.KEY`` (per-class accuracy:
``class_acc.0`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ablate.config import ConfigError

# A run's own numbers, in its row; every other metric name is a derived or an evaluated one.
FINAL = ("test_acc", "test_loss", "train_acc", "train_loss", "wall_s")
ECE_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) report ECE


@dataclass(frozen=True)
class MetricSpec:
    name: str
    fn: Callable[..., Any]
    description: str
    higher_is_better: bool = True
    per_class: bool = False  # returns a value per class, named NAME.INDEX


EVALUATED: dict[str, MetricSpec] = {}


def register_metric(name: str, description: str = "", higher_is_better: bool = True, per_class: bool = False):
    """Register ``fn(logits, labels, num_classes)`` as an evaluated metric ``name``."""

    def add(fn):
        if not name.isidentifier():
            raise ConfigError(f"a metric's name must be an identifier, got {name!r}")
        EVALUATED[name] = MetricSpec(
            name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], higher_is_better, per_class
        )
        return fn

    return add


def compute(logits, labels, num_classes: int) -> dict[str, float]:
    """Every registered metric on one evaluation's logits and labels."""
    out: dict[str, float] = {}
    for spec in EVALUATED.values():
        value = spec.fn(logits, labels, num_classes)
        if isinstance(value, dict):
            out.update({f"{spec.name}.{k}": float(v) for k, v in value.items()})
        else:
            out[spec.name] = float(value)
    return out


def evaluated(name: str) -> MetricSpec | None:
    """The registered metric ``name`` names (``class_acc.3`` names ``class_acc``), or None."""
    if name in EVALUATED and not EVALUATED[name].per_class:
        return EVALUATED[name]
    head, _, key = name.partition(".")
    spec = EVALUATED.get(head)
    return spec if spec is not None and spec.per_class and key else None


def names() -> tuple[str, ...]:
    """What ``--metric``, claims and figures accept: final, derived and evaluated metrics."""
    from ablate import derived

    return (*FINAL, *derived.DERIVED, "epochs_to_P", *(f"{n}.N" if s.per_class else n for n, s in EVALUATED.items()))


def check(name: str, what: str = "metric") -> None:
    from ablate import derived

    if name in FINAL or derived.is_derived(name) or evaluated(name) is not None:
        return
    listed = (
        f"{', '.join(names())} (N: a class's index; P: a percentage; a plugin registers more with "
        "ablate.metrics.register_metric)"
    )
    if what == "metric":
        raise ConfigError(f"unknown metric '{name}'; metrics: {listed}")
    raise ConfigError(f"{what} must be one of {listed}, got {name!r}")


# --------------------------------------------------------------------- built-ins


def _per_class(logits, labels, num_classes: int):
    import torch

    pred = logits.argmax(1)
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).double()
    support = torch.bincount(labels, minlength=num_classes).double()
    predicted = torch.bincount(pred, minlength=num_classes).double()
    return hits, support, predicted


@register_metric(
    "macro_f1",
    "F1 score per class (precision and recall of its predictions), averaged over the "
    "classes that occur in the test set",
)
def macro_f1(logits, labels, num_classes: int) -> float:
    hits, support, predicted = _per_class(logits, labels, num_classes)
    f1 = 2 * hits / (support + predicted).clamp_min(1)  # 2PR/(P+R) = 2 hits / (support + predicted)
    present = support > 0
    return float(f1[present].mean()) if bool(present.any()) else float("nan")


@register_metric("class_acc", "accuracy on each class's test images (class_acc.N: class N)", per_class=True)
def class_acc(logits, labels, num_classes: int) -> dict[str, float]:
    hits, support, _ = _per_class(logits, labels, num_classes)
    return {str(c): float(hits[c] / support[c]) for c in range(num_classes) if support[c] > 0}


@register_metric(
    "ece",
    f"expected calibration error: |accuracy - confidence| over {ECE_BINS} equal-width "
    "confidence bins, weighted by the images in each (lower is better)",
    higher_is_better=False,
)
def ece(logits, labels, num_classes: int) -> float:
    import torch

    probs = torch.softmax(logits.double(), 1)
    confidence, pred = probs.max(1)
    correct = (pred == labels).double()
    # Bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 1 is in the last bin.
    bins = (confidence * ECE_BINS).ceil().long().clamp(1, ECE_BINS) - 1
    count = torch.bincount(bins, minlength=ECE_BINS).double()
    gap = torch.bincount(bins, weights=correct - confidence, minlength=ECE_BINS)
    return float(gap.abs().sum() / max(len(labels), 1)) if count.sum() else float("nan")
