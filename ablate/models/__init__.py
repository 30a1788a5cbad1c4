"""Model registry: a name maps to a builder; ``None`` arguments mean "the builder's default".

Importing this package registers every model family below it.
"""

from ablate.models import (
    densenet,  # noqa: F401
    plain_cnn,  # noqa: F401  (registers its builders)
    resnet,  # noqa: F401
    speednet,  # noqa: F401
)
from ablate.models.registry import (
    Range,
    UnknownModel,
    create_model,
    default_args,
    list_models,
    register_model,
    resolve_args,
)

__all__ = [
    "UnknownModel",
    "create_model",
    "default_args",
    "list_models",
    "register_model",
    "resolve_args",
    "count_params",
    "model_catalog",
    "Range",
]


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_catalog(plugins: list[str] = ()) -> list[dict]:
    """``ablate models``: each model's name, parameters at CIFAR-10's shape, defaults and origin."""
    from ablate import plugins as user_code
    from ablate.models.registry import origin

    user_code.load(list(plugins))
    return [
        {
            "name": n,
            "params": count_params(create_model(n, num_classes=10)),
            "defaults": default_args(n),
            "origin": origin(n),
        }
        for n in list_models()
    ]
