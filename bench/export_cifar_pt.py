"""Write CIFAR-10 as airbench's loader reads it: DEST/cifar10/train.pt and test.pt.

Each file is a dict of ``images`` uint8 [N, 32, 32, 3], ``labels`` int64 [N] and
``classes`` (a list of names), the layout airbench's CifarLoader saves after a torchvision
download. The tensors are the ones ``ablate.data.load`` gives for the same source, in a
fixed shuffled order (the load also writes ablate's decode cache beside an image-folder
tree), so ablate and airbench train on the very same pixels. DEST must lie outside the project tree.

    python bench/export_cifar_pt.py --data DIR --dest DEST
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ablate.data import load

SHUFFLE_SEED = 0


def export(source: str, dest: Path) -> dict:
    t0 = time.perf_counter()
    ds = load(source)
    loaded = time.perf_counter() - t0
    out = dest / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        # An image-folder tree lists the images class by class, and airbench fits its whitening
        # layer to the first 5000 training images: a fixed shuffle mixes the classes, as the
        # official files do.
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
        images = x[order].permute(0, 2, 3, 1).contiguous()  # [N, 3, 32, 32] -> [N, 32, 32, 3]
        torch.save(
            {"images": images, "labels": y[order].to(torch.int64).contiguous(), "classes": list(ds.classes)},
            out / f"{split}.pt",
        )
    return {
        "source": source,
        "dest": str(out),
        "train": len(ds.train_y),
        "test": len(ds.test_y),
        "classes": list(ds.classes),
        "load_s": round(loaded, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="CIFAR-10 source as ablate reads it (a directory, or 'synthetic')")
    ap.add_argument("--dest", required=True, help="folder that receives cifar10/train.pt and cifar10/test.pt")
    ap.add_argument("--out", help="write a JSON summary here")
    args = ap.parse_args()
    info = export(args.data, Path(args.dest))
    print(json.dumps(info))
    if args.out:
        Path(args.out).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
