"""Parameters that train for a number of optimizer steps only, then freeze.

A model offers them with a method ``frozen_after() -> {parameter name: steps}`` (speednet's
whitening bias: airbench94_muon trains it for its first 3 epochs of 8). Two sides honour
it: the optimizer builder (``ablate.optim``) gives each such parameter a group of its own,
whose schedule is the run's squeezed into those steps and 0 after; and the trainer, through
``Freeze``, sets it ``requires_grad = False`` (its grad None) once the run's global step
reaches them, so autograd stops computing its gradient, and whatever only it needed (the
backward through a first layer's input) is no longer done. A run resumed past that step
starts frozen, so it goes on as one that never stopped.
"""

from __future__ import annotations

from torch import nn


def frozen_after(model: nn.Module) -> dict[str, int]:
    """The model's parameters that train for a number of steps only: name -> steps."""
    offer = getattr(model, "frozen_after", None)
    return dict(offer()) if callable(offer) else {}


class Freeze:
    """One run's frozen-after parameters, and when each is due."""

    def __init__(self, model: nn.Module):
        self.after = frozen_after(model)
        params = dict(model.named_parameters())
        unknown = sorted(set(self.after) - set(params))
        if unknown:
            raise ValueError(f"{type(model).__name__}.frozen_after names no parameter of it: {unknown[0]}")
        self.params = {name: params[name] for name in self.after}
        self.next_due = min(self.after.values(), default=None)

    def steps_left(self, start: int) -> dict[str, int]:
        """For an optimizer built after ``start`` global steps: how many more steps each
        parameter trains (0 or less: none, it is left out)."""
        return {name: steps - start for name, steps in self.after.items()}

    def apply(self, done: int) -> None:
        """Freeze every parameter due once ``done`` optimizer steps of the run are done."""
        if self.next_due is None or done < self.next_due:
            return  # the common case, every step: one comparison
        for name, steps in self.after.items():
            p = self.params[name]
            if done >= steps and p.requires_grad:
                p.requires_grad_(False)
                p.grad = None
        self.next_due = min((s for s in self.after.values() if s > done), default=None)
