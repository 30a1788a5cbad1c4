"""Model registry: a name maps to a builder; ``None`` arguments mean "the builder's default".

Importing this package registers every model family below it.
"""

from ablate.models.registry import (
    UnknownModel,
    create_model,
    default_args,
    list_models,
    register_model,
    resolve_args,
)
from ablate.models import plain_cnn  # noqa: F401  (registers its builders)
from ablate.models import resnet  # noqa: F401
from ablate.models import densenet  # noqa: F401
from ablate.models import speednet  # noqa: F401

__all__ = [
    "UnknownModel",
    "create_model",
    "default_args",
    "list_models",
    "register_model",
    "resolve_args",
    "count_params",
]


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
