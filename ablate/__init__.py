"""ablate: CNN ablation studies on CIFAR-10, recorded in a database, drawn from it."""

__version__ = "0.1.0"
