"""Agreement of the classical engines with the real labelled cases in the shared data.

    .venv/bin/python benchmarks/evaluate_engines.py [--data DIR] [--out DIR] [--case NAME]
        [--variants] [--markdown FILE]

Runs each engine on its cases (`support.reference_cases`), prints per structure the Dice,
our volume, the reference volume and the volume error, with the caveat of each mapping,
then the engine's landmarks and notes and its run time. With --out, writes one overlay PNG
per case (our labels filled, reference outlined in white) for a look at the errors.
With --variants, also runs every acquisition variant of `support.robustness` that applies
to the case's engine (scanner resolution, 5 mm + noise, rotated, ...). With --markdown,
writes the Dice of every case and variant as the README's tables.
Exit status 2 when the shared data cannot be found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from myonode.infer.engines import create
from myonode.infer.engines.orientation import canonical

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from myonode.app.demo.shared_data import shared_data_dir

from support.reference_cases import CASES, CaseResult, ReferenceCase, evaluate_case
from support.robustness import VARIANTS, evaluate_variant


def print_result(result: CaseResult) -> None:
    print(f"\n## {result.case.name} ({result.case.engine}): {result.case.description}")
    print(f"{'structure':45} {'Dice':>6} {'ours cm3':>9} {'ref cm3':>9} {'error':>7}  caveat")
    for comparison in result.case.comparisons:
        a = result.agreements[comparison.name]
        error = a.volume_error_percent
        error_text = f"{error:+6.0f}%" if error is not None else "    n/a"
        print(
            f"{comparison.name:45} {a.dice:6.3f} {a.predicted_cm3:9.1f} "
            f"{a.reference_cm3:9.1f} {error_text}  {comparison.caveat}"
        )
    print(f"run time {result.seconds:.1f} s; landmarks {result.label_map.landmarks or 'none'}")
    for note in result.label_map.notes:
        print(f"  note: {note}")


def write_overlay(result: CaseResult, path: Path, slices: int = 4) -> None:
    """Axial slices (canonical view) spread over the references' extent, inferior to
    superior: ours filled, reference outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = canonical(result.volume.geometry)
    image = view.view(result.volume.array)
    labels = view.view(result.label_map.labels)
    reference = np.zeros(image.shape, dtype=bool)
    for mask in result.references.values():
        reference |= view.view(mask)
    covered = np.nonzero(reference.any(axis=(1, 2)))[0]
    if len(covered):
        ks = sorted({int(k) for k in np.quantile(covered, np.linspace(0.15, 0.85, slices))})
    else:
        ks = [image.shape[0] // 2]
    low, high = (-160, 240) if result.case.engine.endswith("ct") else np.percentile(image, [1, 99])
    fig, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 4))
    for axis, k in zip(np.atleast_1d(axes), ks, strict=True):
        axis.imshow(image[k], cmap="gray", vmin=low, vmax=high)
        shown = np.ma.masked_equal(labels[k].astype(float), 0)
        axis.imshow(shown, cmap="tab20", alpha=0.45, interpolation="nearest", vmin=1, vmax=20)
        if reference[k].any():
            axis.contour(reference[k], [0.5], colors="white", linewidths=0.7)
        axis.set_title(f"{result.case.name} k={k}", fontsize=8)
        axis.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def markdown_table(case: ReferenceCase, columns: dict[str, dict[str, float]]) -> str:
    """One case's Dice: a row per compared structure, a column per acquisition."""
    names = list(columns)
    lines = [
        f"**{case.name}** ({case.engine}; {case.description})",
        "",
        "| structure | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for comparison in case.comparisons:
        cells = [f"{columns[n][comparison.name]:.2f}" for n in names]
        lines.append(f"| {comparison.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data directory")
    parser.add_argument("--out", type=Path, default=None, help="folder for overlay PNGs")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--variants", action="store_true", help="acquisition variants too")
    parser.add_argument("--markdown", type=Path, default=None, help="write the Dice tables")
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None or not data.is_dir():
        print("shared data not found: pass --data or set MYONODE_TEST_DATA", file=sys.stderr)
        return 2
    engines = {}
    tables = []
    for case in CASES:
        if args.case and case.name not in args.case:
            continue
        engine = engines.setdefault(case.engine, create(case.engine))
        result = evaluate_case(case, engine, data)
        print_result(result)
        if args.out:
            write_overlay(result, args.out / f"{case.name}.png")
        columns = {"original": {n: a.dice for n, a in result.agreements.items()}}
        for variant in VARIANTS if args.variants else ():
            if case.engine not in variant.engines:
                continue
            found = evaluate_variant(case, variant, engine, data)
            columns[variant.name] = {n: a.dice for n, a in found.agreements.items()}
            dice = ", ".join(f"{n} {d:.3f}" for n, d in columns[variant.name].items())
            print(f"  variant {variant.name}: {dice}")
            print(f"    landmarks {found.label_map.landmarks}", flush=True)
        tables.append(markdown_table(case, columns))
    if args.markdown:
        args.markdown.write_text("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
