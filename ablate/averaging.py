"""Weight averaging: an exponential moving average of a model's weights kept beside training.

``lookahead`` is airbench94's variant of Lookahead (Zhang et al. 2019): every few steps the
average takes a step towards the weights and the weights jump back to it, and training ends
on the average. ``ema`` leaves training alone and is only read: evaluation swaps it in.
Both average the BN running statistics with the weights, so the two stay a matching pair.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ablate.config import AverageCfg


class WeightAverage:
    def __init__(self, cfg: AverageCfg, model: nn.Module, total_steps: int):
        self.cfg = cfg
        self.total = total_steps
        self.average = {k: v.detach().clone() for k, v in self._floats(model).items()}

    @staticmethod
    def _floats(model: nn.Module) -> dict[str, torch.Tensor]:
        # Integer buffers (BN's batch counter) are counts, not something to average.
        return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay(self, step: int) -> float:
        """How much of the average an update at ``step`` (1-based, of ``total``) keeps."""
        cfg = self.cfg
        return cfg.decay**cfg.every * (step / self.total) ** cfg.ramp_power

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Call after every optimizer step; acts every ``every`` steps and at the last one."""
        if step % self.cfg.every and step != self.total:
            return
        weight = 1 - self.decay(step)
        for key, value in self._floats(model).items():
            avg = self.average[key]
            avg.lerp_(value.to(avg.dtype), weight)
            if self.cfg.name == "lookahead":
                value.copy_(avg)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model with the average's weights inside the block (``ema``); ``lookahead``'s
        weights already are the average wherever it was last updated, so they stay."""
        if self.cfg.name != "ema":
            yield
            return
        live = self._floats(model)
        with torch.no_grad():
            saved = {k: v.clone() for k, v in live.items()}
            for key, value in live.items():
                value.copy_(self.average[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in live.items():
                    value.copy_(saved[key])

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state["average"].items():
            self.average[key].copy_(value)
