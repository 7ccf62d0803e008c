"""Agreement of the classical engines on harder variants of the real cases.

    .venv/bin/python benchmarks/robustness.py [--data DIR] [--case NAME] [--variant NAME]

For each case and variant (`support.robustness.VARIANTS`: mirrored, right side cut, no
lungs, 5 mm slices, contrast, obese) prints per structure the Dice and volume error beside
the original's, then the notes that differ from the original's, so a loss of accuracy and
what the engine said about it can be read together. Exit status 2 without the shared data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from myonode.infer.engines import create

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from myonode.app.demo.shared_data import shared_data_dir

from support.reference_cases import CASES, evaluate_case
from support.robustness import VARIANTS, evaluate_variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data directory")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--variant", action="append", help="only this variant (repeatable)")
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None or not data.is_dir():
        print("shared data not found: pass --data or set MYONODE_TEST_DATA", file=sys.stderr)
        return 2
    for case in CASES:
        if args.case and case.name not in args.case:
            continue
        engine = create(case.engine)
        original = evaluate_case(case, engine, data)
        for variant in VARIANTS:
            if case.engine not in variant.engines:
                continue
            if args.variant and variant.name not in args.variant:
                continue
            result = evaluate_variant(case, variant, engine, data)
            print(f"\n## {case.name} / {variant.name}: {variant.description}")
            print(f"{'structure':45} {'Dice':>6} {'(orig)':>7} {'error':>7} {'(orig)':>7}")
            for comparison in case.comparisons:
                a, o = result.agreements[comparison.name], original.agreements[comparison.name]
                print(
                    f"{comparison.name:45} {a.dice:6.3f} {o.dice:7.3f} "
                    f"{_percent(a.volume_error_percent)} {_percent(o.volume_error_percent)}"
                )
            landmarks = result.label_map.landmarks
            print(f"landmarks {landmarks or 'none'} (original {original.label_map.landmarks})")
            for note in result.label_map.notes:
                if note not in original.label_map.notes:
                    print(f"  new note: {note}")
    return 0


def _percent(value: float | None) -> str:
    return f"{value:+6.0f}%" if value is not None else "    n/a"


if __name__ == "__main__":
    sys.exit(main())
