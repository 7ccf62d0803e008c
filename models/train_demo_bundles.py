"""Train the committed demo bundles on generated phantoms (CPU, a few minutes in all).

    python -m myonode.models.train_demo_bundles [--only NAME ...] [--out DIR]

Every bundle is the seed template at demo size (`templates`), trained through the same
`myonode train` code path a site uses, on phantoms from `phantoms` written as NIfTI case
folders. Intended use is "demo" and the bundles' outputs say so. Re-running reproduces them
up to floating-point nondeterminism (seeded data, seeded training).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from myonode.models import BUNDLES_DIR
from myonode.models.bundle import Bundle, write_bundle
from myonode.models.checkpoints import TrainOptions
from myonode.models.data import write_case
from myonode.models.phantoms import (
    PhantomCase,
    chest_radiograph,
    ct_abdomen,
    mr_iliopsoas,
    mr_thighs,
)
from myonode.models.templates import (
    Template,
    ct_muscle_seed000,
    cxr_sarcopenia_seed004,
    mr_iliopsoas_seed001,
    mr_thigh_seed002,
)
from myonode.models.training import train


def write_phantom_cases(
    folder: Path, bundle: Bundle, generate: Callable[[int], PhantomCase], seeds: range
) -> None:
    label_of_key = {spec.key: label for label, spec in bundle.manifest.labels.items()}
    for seed in seeds:
        case = generate(seed)
        write_case(folder / f"phantom{seed:03d}", case.volume, case.relabelled(label_of_key))


def write_radiographs(folder: Path, seeds: range) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "targets.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "alm", "hgs", "crt", "age", "sex", "bmi", "sarcopenia"])
        for seed in seeds:
            r = chest_radiograph(seed)
            name = f"cxr{seed:04d}.npy"
            np.save(folder / name, r.image)
            writer.writerow(
                [name, r.alm_kg, r.hgs_kg, r.crt_s, r.age, r.sex, r.bmi, int(r.sarcopenia)]
            )


# name -> (template, phantom generator (None: radiographs), number of cases)
DEMOS: dict[str, tuple[Callable[[bool], Template], Callable | None, int]] = {
    "ct-abdominal-muscles-seed000-demo": (ct_muscle_seed000, ct_abdomen, 10),
    "mr-iliopsoas-seed001-demo": (mr_iliopsoas_seed001, mr_iliopsoas, 8),
    "mr-thigh-seed002-demo": (mr_thigh_seed002, mr_thighs, 8),
    "cxr-sarcopenia-seed004-demo": (cxr_sarcopenia_seed004, None, 300),
}


def train_demo(name: str, out_dir: Path, progress: bool = True) -> Bundle:
    template_of, generate, count = DEMOS[name]
    template = template_of(True)
    target = out_dir / name
    if target.exists():
        shutil.rmtree(target)
    with tempfile.TemporaryDirectory() as scratch:
        bundle = write_bundle(
            target, template.manifest, template.inference, template.train, template.readme
        )
        data = Path(scratch) / "data"
        if generate is None:
            write_radiographs(data, range(count))
            description = f"{count} generated radiographs (models/phantoms.py chest_radiograph)"
        else:
            write_phantom_cases(data, bundle, generate, range(count))
            description = f"{count} generated phantoms (models/phantoms.py {generate.__name__})"
        result = train(
            target,
            data,
            options=TrainOptions(
                intended_use="demo",
                progress=progress,
                data_description=description,
                command=f"python -m myonode.models.train_demo_bundles --only {name}",
            ),
        )
    shutil.rmtree(target / "train", ignore_errors=True)
    return result.bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(DEMOS), help="bundles to train")
    parser.add_argument("--out", type=Path, default=BUNDLES_DIR)
    args = parser.parse_args(argv)
    for name in args.only or DEMOS:
        bundle = train_demo(name, args.out)
        validation = bundle.manifest.validation
        print(f"{name}: {validation.metrics if validation else 'no validation split'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
