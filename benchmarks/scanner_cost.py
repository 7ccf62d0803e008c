"""Cost of processing what a scanner sends: a 512 x 512 x 300 CT, against decoding it.

    .venv/bin/python benchmarks/scanner_cost.py [--data DIR] [--slices 300] [--slice-mm 1.1]
        [--workdir DIR]

Builds a series of 512 x 512 images of 0.7 mm pixels and 1.1 mm slices from the shared
abdomen-pelvis CT (`support.robustness.resampled`), writes it as CT Image Storage files,
then measures in the same run:
  1. pydicom decoding every file to pixels (dcmread + pixel_array), in this process: the
     floor any DICOM node pays for reading the series;
  2. `myonode process` of the folder (ingest, routing, classical-ct, SEG, SR) in a child
     process: wall time, CPU time and peak resident memory (getrusage of the child). The shipped
     profile `ct_abdominal_muscle` routes only series of 2 mm or thicker (seed 000); the
     run uses a site copy of it (`routing.profiles_dir`) with the minimum lowered to 1 mm,
     so that this series is measured (0.5 mm with `--slice-mm` below 1: the CT covers about
     330 mm, so 600 images need `--slices 600 --slice-mm 0.55`).
Prints both, their ratio and peak RSS beside the aims (at most 20x, at most 2.5 GB), and the
CPU seconds of each: on a machine busy with other work wall time grows with the load, CPU
time much less (decoding is cheap in CPU, so their ratio is far above the wall ratio).
Exit status 2 without the shared data.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from myonode.app.demo.shared_data import shared_data_dir
from myonode.app.demo.synthetic import write_ct_series
from myonode.core.volume import load_nifti, with_positive_axes

from support.robustness import resampled


def build_series(data: Path, out: Path, slices: int, slice_mm: float = 1.1) -> int:
    """Write the scanner-resolution series; returns the number of files."""
    volume = with_positive_axes(load_nifti(data / "ct/abdomen_pelvis_ct.nii.gz"))
    body = {"body": volume.array > -500}
    scanner, _masks = resampled(volume, body, (slice_mm, 0.7, 0.7), (slices, 512, 512))
    return len(write_ct_series(scanner.array, scanner.geometry, out, seed="scanner-cost"))


# Runs a command as the child of a small process and prints the child's peak RSS (KiB) and
# its CPU seconds (user + system).
# The measuring process must be small: a child's peak includes the memory of the process
# it was forked from, which would count this benchmark's arrays against the node.
PEAK_RSS = """
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_pid, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def thin_slice_config(folder: Path, minimum_mm: float = 1.0) -> Path:
    """A config whose site profile is the shipped CT muscle profile accepting thin slices."""
    shipped = Path(__file__).resolve().parents[1] / "dicom_profiles" / "ct_abdominal_muscle.yaml"
    profile = yaml.safe_load(shipped.read_text())
    profile["rules"]["slice_thickness_mm"]["min"] = minimum_mm
    profiles = folder / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "ct_abdominal_muscle.yaml").write_text(yaml.safe_dump(profile))
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"routing": {"profiles_dir": str(profiles)}}))
    return config


def decode_seconds(folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of decoding every file of the series."""
    started, cpu = time.perf_counter(), time.process_time()
    arrays = [pydicom.dcmread(path).pixel_array for path in sorted(folder.iterdir())]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert len(arrays) and arrays[0].shape == (512, 512)
    return seconds, cpu


def series_arguments(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, Path]:
    """The scanner series' options (shared with `scanner_stages.py`) and the shared data
    folder; exits with status 2 when that folder is not found."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=None, help="shared data directory")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--slice-mm", type=float, default=1.1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    data = args.data or shared_data_dir()
    if data is None or not data.is_dir():
        print("shared data not found: pass --data or set MYONODE_TEST_DATA", file=sys.stderr)
        sys.exit(2)
    return args, data


def main(argv: list[str] | None = None) -> int:
    args, data = series_arguments(__doc__.splitlines()[0], argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        series, out = Path(tmp) / "series", Path(tmp) / "out"
        count = build_series(data, series, args.slices, args.slice_mm)
        decode, decode_cpu = min(decode_seconds(series) for _ in range(2))
        myonode = Path(sys.executable).with_name("myonode")
        command = [
            str(myonode),
            "--config",
            str(thin_slice_config(Path(tmp), 1.0 if args.slice_mm >= 1.0 else 0.5)),
            "process",
            str(series),
            "--out",
            str(out),
        ]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *command], capture_output=True, text=True
        )
        seconds = time.perf_counter() - started
        peak_kib, cpu = done.stdout.strip().splitlines()[-1].split()
        peak_gb, cpu = int(peak_kib) / 1024**2, float(cpu)
        modalities = [
            pydicom.dcmread(p, stop_before_pixels=True).Modality for p in out.rglob("*.dcm")
        ]
    print(f"series: {count} images of 512 x 512 (0.7 mm pixels, {args.slice_mm:g} mm slices)")
    print(f"pydicom decode (floor): {decode:7.1f} s  ({decode_cpu:.1f} s CPU)")
    print(f"myonode process:        {seconds:7.1f} s  ({cpu:.1f} s CPU, exit {done.returncode})")
    print(f"ratio process/decode:   {seconds / decode:7.1f} x  (aim <= 20 x)")
    print(f"ratio of CPU seconds:   {cpu / decode_cpu:7.1f} x")
    print(f"peak RSS of process:    {peak_gb:7.2f} GB (aim <= 2.5 GB)")
    print(f"written: {', '.join(sorted(set(modalities))) or 'nothing'} ({len(modalities)} files)")
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
