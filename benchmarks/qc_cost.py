"""Cost of quality control on what a scanner sends, against measuring the same label map.

    .venv/bin/python benchmarks/qc_cost.py [--data DIR] [--slices 300]

Resamples the shared abdomen-pelvis CT and its TotalSegmentator reference labels (glutei,
erector spinae, iliopsoas) to 512 x 512 images of 0.7 mm pixels and 1.1 mm slices
(`support.robustness.resampled`), then times in the same run:
  1. the measure stage on that label map (`measure_structures`, volumes, HU, CSA): the peer,
     work every job does anyway;
  2. `quality_control` on the same image and labels.
Prints both, their ratio beside the aim (QC at most 2x the measurement), and the verdicts
(all pass: the reference is a correct segmentation). Exit status 2 without the shared data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from myonode.app.demo.shared_data import shared_data_dir
from myonode.core.patient import PatientFacts
from myonode.core.types import LabelMap
from myonode.dicom.anatomy import STRUCTURES
from myonode.measure.structures import measure_structures
from myonode.qc.checks import quality_control

from support.qc_cases import WHOLE_CT_V1, reference_case
from support.robustness import resampled

AIM_RATIO = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data directory")
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None or not data.is_dir():
        print("shared data not found: pass --data or set MYONODE_TEST_DATA", file=sys.stderr)
        return 2
    volume, label_map, _raw = reference_case(
        data,
        "ct/abdomen_pelvis_ct.nii.gz",
        "ct/abdomen_pelvis_labels_totalseg_v1.nii.gz",
        WHOLE_CT_V1,
    )
    masks = {s.key: label_map.labels == n for n, s in label_map.structures.items()}
    scanner, fine = resampled(volume, masks, (1.1, 0.7, 0.7), (args.slices, 512, 512))
    labels = np.zeros(scanner.shape, dtype=np.uint8)
    for n, key in enumerate(fine, start=1):
        labels[fine[key]] = n
    fine_map = LabelMap(labels, {n: STRUCTURES[key] for n, key in enumerate(fine, start=1)})

    started = time.perf_counter()
    measure_structures(labels, fine_map.structures, scanner.geometry, attenuation=scanner.array)
    measure_s = time.perf_counter() - started
    started = time.perf_counter()
    report = quality_control(scanner, fine_map, "CT", PatientFacts())
    qc_s = time.perf_counter() - started

    ratio = qc_s / measure_s
    print(f"grid {scanner.shape} at {scanner.geometry.spacing.round(2).tolist()} mm (i, j, k)")
    print(f"measure stage (peer): {measure_s:.2f} s")
    print(
        f"quality control:      {qc_s:.2f} s  ({ratio:.2f}x the measure stage; aim <= {AIM_RATIO}x)"
    )
    counts = report.counts()
    print("verdicts:", ", ".join(f"{v} {n}" for v, n in counts.items()))
    for key, quality in report.structures.items():
        if quality.verdict != "pass":
            print(f"  {key}: {quality.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
