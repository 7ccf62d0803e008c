"""Generated phantoms with known labels, for demo bundles and tests (never for clinical use).

Each generator draws one case from a seed: anatomy-like shapes whose size, position and
intensity vary between cases, so a network must learn shapes and positions rather than one
image. Label values index the generator's ``*_KEYS`` tuple (1-based). Geometry is axial LPS
with identity directions: column i runs towards patient Left, row j towards Posterior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from myonode.core.volume import Geometry, Volume
from myonode.dicom.anatomy import SEED000_GROUPS

# Seed 000's 12 groups, the label order of the CT bundles.
CT_KEYS = tuple(s.key for s in SEED000_GROUPS)
ILIOPSOAS_KEYS = ("iliopsoas_right", "iliopsoas_left")
# The 12 of seed 002's 27 structures the thigh phantom draws (the other 15 stay absent).
THIGH_KEYS = (
    "rectus_femoris",
    "vastus_lateralis",
    "vastus_medialis",
    "vastus_intermedius",
    "sartorius",
    "adductor_magnus",
    "adductor_longus",
    "gracilis",
    "biceps_femoris",
    "semitendinosus",
    "semimembranosus",
    "femur",
)


@dataclass
class PhantomCase:
    volume: Volume
    labels: np.ndarray  # [k, j, i], values index the generator's keys (1-based), 0 = none
    keys: tuple[str, ...]

    def relabelled(self, label_of_key: dict[str, int]) -> np.ndarray:
        """The labels renumbered to a bundle's values (keys the bundle lacks become 0)."""
        lookup = np.zeros(len(self.keys) + 1, dtype=np.uint16)
        for n, key in enumerate(self.keys, start=1):
            lookup[n] = label_of_key.get(key, 0)
        return lookup[self.labels]


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Geometry:
    nk, nj, ni = shape
    return Geometry(
        origin=np.array([-ni * spacing[0] / 2, -nj * spacing[1] / 2, -nk * spacing[2] / 2]),
        directions=np.eye(3),
        spacing=np.array(spacing, dtype=float),
    )


def _ellipse(j, i, cj, ci, rj, ri, angle=0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dj, di = j - cj, i - ci
    u, v = c * dj + s * di, -s * dj + c * di
    return (u / rj) ** 2 + (v / ri) ** 2 <= 1.0


def ct_abdomen(seed: int, shape: tuple[int, int, int] = (12, 96, 96)) -> PhantomCase:
    """An axial abdomen in HU with seed 000's 12 muscle groups (gluteus medius in the lowest
    third of slices, where the pelvis would begin)."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = shape
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    scale = rng.uniform(0.85, 1.1)
    cj = nj / 2 + rng.uniform(-3, 3)
    ci = ni / 2 + rng.uniform(-3, 3)
    a, b = nj * 0.38 * scale, ni * 0.46 * scale  # body semi-axes (rows, columns)
    muscle_hu = rng.uniform(35, 60)
    noise = rng.uniform(8, 18)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    label = {key: n for n, key in enumerate(CT_KEYS, start=1)}
    for k in range(nk):
        taper = 1.0 - 0.1 * k / max(nk - 1, 1)
        body = _ellipse(j, i, cj, ci, a * taper, b * taper)
        inner = _ellipse(j, i, cj, ci, a * taper - 5, b * taper - 5)
        cavity = _ellipse(j, i, cj, ci, a * taper - 9, b * taper - 9)
        plane = np.where(body, -100.0, -1000.0)
        plane[cavity] = -60.0
        lab = np.zeros((nj, ni), dtype=np.uint8)
        wall = inner & ~cavity
        for side, sign in (("left", 1.0), ("right", -1.0)):
            on_side = (i - ci) * sign > 0
            rectus = wall & on_side & (np.abs(i - ci) < 0.22 * b) & (j < cj)
            lateral = wall & on_side & (j < cj + 0.3 * a) & ~rectus
            lab[lateral] = label[f"lateral_abdominals_{side}"]
            lab[rectus] = label[f"rectus_abdominis_{side}"]
            off = sign * b
            regions = {
                "psoas": _ellipse(j, i, cj + 0.22 * a, ci + 0.16 * off, 0.1 * a, 0.08 * b),
                "quadratus_lumborum": _ellipse(
                    j, i, cj + 0.42 * a, ci + 0.3 * off, 0.09 * a, 0.1 * b, 0.4 * sign
                ),
                "erector_spinae": _ellipse(j, i, cj + 0.7 * a, ci + 0.12 * off, 0.14 * a, 0.09 * b),
            }
            if k < nk // 3:
                regions["gluteus_medius"] = _ellipse(
                    j, i, cj + 0.3 * a, ci + 0.6 * off, 0.16 * a, 0.08 * b, -0.5 * sign
                )
            for name, mask in regions.items():
                lab[mask & body] = label[f"{name}_{side}"]
        vertebra = _ellipse(j, i, cj + 0.42 * a, ci, 0.12 * a, 0.1 * b)
        plane[lab > 0] = muscle_hu
        plane[vertebra] = 350.0
        lab[vertebra] = 0
        liver = _ellipse(j, i, cj - 0.1 * a, ci - 0.35 * b, 0.25 * a, 0.2 * b) & cavity
        plane[liver & (lab == 0)] = 60.0
        hu[k] = plane
        labels[k] = lab
    body_mask = hu > -900
    hu += (rng.normal(0, noise, size=shape) * body_mask).astype(np.float32)
    geometry = _grid(shape, (0.8 * 512 / ni, 0.8 * 512 / nj, 5.0))
    return PhantomCase(Volume(array=hu, geometry=geometry), labels, CT_KEYS)


def mr_iliopsoas(seed: int, shape: tuple[int, int, int] = (32, 48, 64)) -> PhantomCase:
    """A Dixon-water-like pelvis: left and right iliopsoas running caudally and laterally
    from beside the spine, among gluteal distractors of the same intensity."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = shape
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    cj = nj / 2 + rng.uniform(-2, 2)
    ci = ni / 2 + rng.uniform(-2, 2)
    a, b = nj * 0.42, ni * 0.45
    muscle = rng.uniform(250, 350)
    water = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    width = rng.uniform(0.08, 0.11)
    for k in range(nk):
        t = k / max(nk - 1, 1)  # 0 = caudal (hips), 1 = cranial (lumbar)
        body = _ellipse(j, i, cj, ci, a, b)
        plane = np.where(body, 60.0, 0.0)
        lab = np.zeros((nj, ni), dtype=np.uint8)
        for label, sign in ((1, -1.0), (2, 1.0)):  # right at low i, left at high i
            centre_i = ci + sign * b * (0.12 + 0.3 * (1 - t))
            centre_j = cj + a * (0.15 - 0.25 * (1 - t))
            psoas = _ellipse(j, i, centre_j, centre_i, width * a * 1.3, width * b * (1 + t))
            lab[psoas & body] = label
            glute = _ellipse(j, i, cj + 0.55 * a, ci + sign * 0.5 * b, 0.2 * a, 0.15 * b)
            plane[glute & body] = muscle * 0.95
        plane[lab > 0] = muscle
        spine = _ellipse(j, i, cj + 0.3 * a, ci, 0.1 * a, 0.08 * b)
        plane[spine] = 30.0
        lab[spine] = 0
        water[k] = plane
        labels[k] = lab
    water += rng.normal(0, 12, size=shape).astype(np.float32) * (water > 0)
    geometry = _grid(shape, (2.2, 2.2, 3.0))
    return PhantomCase(Volume(array=water, geometry=geometry), labels, ILIOPSOAS_KEYS)


def mr_thighs(seed: int, shape: tuple[int, int, int] = (32, 48, 96)) -> PhantomCase:
    """Two thighs in cross-section: femur, a muscle annulus divided into anatomically ordered
    compartments (mirrored between the sides, since the labels are unsided), fat around."""
    rng = np.random.default_rng(seed)
    nk, nj, ni = shape
    j, i = np.mgrid[0:nj, 0:ni].astype(float)
    fat, muscle, bone = rng.uniform(330, 420), rng.uniform(180, 240), 110.0
    image = np.full(shape, 20.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    label = {key: n for n, key in enumerate(THIGH_KEYS, start=1)}
    # Sectors by angle from the thigh's lateral direction, towards anterior (degrees).
    outer = [
        (-30, 25, "vastus_lateralis"),
        (25, 75, "rectus_femoris"),
        (75, 115, "vastus_medialis"),
        (115, 150, "adductor_longus"),
        (150, 185, "gracilis"),
        (185, 250, "adductor_magnus"),
        (250, 280, "semimembranosus"),
        (280, 305, "semitendinosus"),
        (305, 330, "biceps_femoris"),
    ]
    radius = min(nj * 0.4, ni * 0.22) * rng.uniform(0.9, 1.05)
    for sign in (-1.0, 1.0):  # right thigh at low i, left at high i
        cj = nj / 2 + rng.uniform(-1.5, 1.5)
        ci = ni / 2 + sign * ni * 0.25 + rng.uniform(-1.5, 1.5)
        dj, di = j - cj, (i - ci) * sign  # di > 0: lateral on both sides
        r = np.hypot(dj, di)
        theta = np.degrees(np.arctan2(-dj, di)) % 360  # 0 lateral, 90 anterior (j decreases)
        theta = np.where(theta > 330, theta - 360, theta)
        femur = r <= radius * 0.18
        inner_ring = (r > radius * 0.18) & (r <= radius * 0.38) & (theta > -30) & (theta < 115)
        ring = (r > radius * 0.18) & (r <= radius * 0.85)
        sartorius = _ellipse(dj, di, -radius * 0.72, -radius * 0.25, radius * 0.12, radius * 0.1)
        plane_lab = np.zeros((nj, ni), dtype=np.uint8)
        for low, high, name in outer:
            plane_lab[ring & (theta >= low) & (theta < high)] = label[name]
        plane_lab[inner_ring] = label["vastus_intermedius"]
        plane_lab[sartorius & (r <= radius)] = label["sartorius"]
        plane_lab[femur] = label["femur"]
        limb = r <= radius
        for k in range(nk):
            taper = 1.0 - 0.15 * k / max(nk - 1, 1)
            inside = r <= radius * taper
            plane = image[k]
            plane[limb & inside] = fat
            muscles = (plane_lab > 0) & (plane_lab != label["femur"]) & inside
            plane[muscles] = muscle
            plane[femur] = bone
            labels[k][(plane_lab > 0) & inside] = plane_lab[(plane_lab > 0) & inside]
    image += rng.normal(0, 15, size=shape).astype(np.float32)
    geometry = _grid(shape, (3.0, 3.0, 4.0))
    return PhantomCase(Volume(array=image, geometry=geometry), labels, THIGH_KEYS)


@dataclass
class Radiograph:
    """A generated chest radiograph with its (synthetic) subject."""

    image: np.ndarray  # [rows, columns]
    alm_kg: float
    hgs_kg: float
    crt_s: float
    age: float
    sex: str  # "M" / "F"
    bmi: float
    sarcopenia: bool


def awgs2019_sarcopenia(
    alm_kg: float, height_m: float, hgs_kg: float, crt_s: float, sex: str
) -> bool:
    """AWGS 2019 (seed 004): low ALMI and (low handgrip or chair-rise >= 12 s)."""
    almi = alm_kg / height_m**2
    low_mass = almi < (7.0 if sex == "M" else 5.7)
    low_function = hgs_kg < (28.0 if sex == "M" else 18.0) or crt_s >= 12.0
    return bool(low_mass and low_function)


def chest_radiograph(seed: int, size: int = 96) -> Radiograph:
    """A PA chest radiograph whose soft-tissue shell thickness and shoulder girdle width
    follow the subject's appendicular lean mass; handgrip follows ALM and sex, chair-rise
    time follows age. The physiology is invented: it only gives the networks a signal."""
    rng = np.random.default_rng(seed)
    sex = "M" if rng.random() < 0.5 else "F"
    age = rng.uniform(60, 90)
    height = rng.normal(1.70 if sex == "M" else 1.57, 0.06)
    bmi = rng.normal(24, 3)
    almi = rng.normal(7.2 if sex == "M" else 5.9, 0.8) - 0.02 * (age - 70)
    alm = almi * height**2
    hgs = max(5.0, 2.2 * alm + (8 if sex == "M" else 0) - 0.25 * (age - 70) + rng.normal(0, 3))
    crt = max(5.0, 9.0 + 0.15 * (age - 70) - 0.1 * (alm - 17) + rng.normal(0, 1.5))
    j, i = np.mgrid[0:size, 0:size].astype(float) / size
    thickness = 0.02 + 0.0035 * (alm - 10)
    half_width = 0.3 + 0.004 * bmi
    image = np.full((size, size), 0.05)
    chest = ((i - 0.5) / half_width) ** 2 + ((j - 0.55) / 0.45) ** 2 <= 1
    lungs = ((np.abs(i - 0.5) - 0.14) / (half_width - 0.14 - thickness)) ** 2 + (
        (j - 0.55) / (0.4 - thickness)
    ) ** 2 <= 1
    image[chest] = 0.75
    image[lungs & (np.abs(i - 0.5) > 0.07)] = 0.25
    shoulders = (j < 0.2) & (np.abs(i - 0.5) < half_width + 0.6 * thickness * 4)
    image[shoulders & (j > 0.12)] = 0.7
    image += rng.normal(0, 0.04, size=image.shape)
    return Radiograph(
        image=(np.clip(image, 0, 1) * 4095).astype(np.float32),
        alm_kg=float(alm),
        hgs_kg=float(hgs),
        crt_s=float(crt),
        age=float(age),
        sex=sex,
        bmi=float(bmi),
        sarcopenia=awgs2019_sarcopenia(alm, height, hgs, crt, sex),
    )
