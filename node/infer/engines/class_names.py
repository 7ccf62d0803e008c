"""Class names of trained models (TotalSegmentator's, and nnU-Net folders that use them) mapped to
the node's structure keys, and so to its codes. Shared by the `totalsegmentator` and `nnunet`
engines, so neither imports the other for it.
"""

from __future__ import annotations

# TotalSegmentator class name -> node structure key.
NAME_TO_KEY: dict[str, str] = {
    **{
        f"{muscle}_{side}": f"{muscle}_{side}"
        for muscle in ("gluteus_maximus", "gluteus_medius", "gluteus_minimus", "iliopsoas")
        for side in ("left", "right")
    },
    **{f"autochthon_{side}": f"deep_back_muscles_{side}" for side in ("left", "right")},
    **{
        f"{muscle}_{side}": f"{muscle}_{side}"
        for muscle in (
            "rectus_abdominis",
            "external_oblique",
            "internal_oblique",
            "erector_spinae",
            "transversospinalis",
            "quadratus_lumborum",
        )
        for side in ("left", "right")
    },
    **{f"psoas_major_{side}": f"psoas_{side}" for side in ("left", "right")},
    "skeletal_muscle": "skeletal_muscle",
}
