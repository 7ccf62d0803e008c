"""Values a regression model predicts from an image (seed 004: a chest radiograph), as the
report carries them: each a Gaussian (mean, standard deviation) with its code and unit.

Predicted grip strength, chair-rise time and appendicular lean mass also feed the sarcopenia
criteria, flagged as predicted, because a prediction must never read as a measurement.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.sr.coding import Code

from myonode.core.patient import PatientFacts
from myonode.core.types import Estimate
from myonode.dicom import codes as c
from myonode.measure.sarcopenia import almi

# Tracking identifier of the SR group whose sarcopenia conclusions rest on predicted inputs;
# its result rows end in PREDICTED_SUFFIX, so they never read as measured conclusions.
PREDICTION_PREFIX = "prediction:"
PREDICTED_SARCOPENIA = PREDICTION_PREFIX + "sarcopenia"
PREDICTED_SUFFIX = "_predicted"


@dataclass(frozen=True)
class Target:
    """A model target the node knows how to code and use: its concept, name, unit and the
    sarcopenia input (see `sarcopenia.ewgsop2`) it stands for."""

    code: Code
    name: str
    unit: str
    criterion_input: str | None


TARGETS: dict[str, Target] = {
    "alm": Target(c.ALM, "Appendicular lean mass", "kg", "alm_kg"),
    "hgs": Target(c.HANDGRIP, "Handgrip strength", "kg", "grip_kg"),
    "crt": Target(c.CHAIR_RISE, "Five-times chair-rise time", "s", "chair_rise_s"),
    "almi": Target(c.ALMI, "Appendicular lean mass index", "kg/m2", None),
    "sarcopenia_probability": Target(c.SARCOPENIA_PROBABILITY, "Sarcopenia probability", "1", None),
}


@dataclass(frozen=True)
class Prediction:
    """One predicted quantity; `sd` is None where the model gives no spread (the calibrated
    sarcopenia probability)."""

    key: str
    mean: float
    sd: float | None

    @property
    def target(self) -> Target:
        return TARGETS[self.key]


def predictions_from(
    estimates: Mapping[str, Estimate], facts: PatientFacts
) -> tuple[list[Prediction], list[str]]:
    """The model's estimates as predictions, plus ALMI = ALM / height² when the height is
    known (σ scales the same way: the height is taken as exact); notes say what is left out."""
    predictions, notes = [], []
    for key, estimate in estimates.items():
        target = TARGETS.get(key)
        if target is None or target.unit != estimate.unit:
            notes.append(f"Model target {key!r} ({estimate.unit}) has no code here; not reported.")
            continue
        predictions.append(Prediction(key, estimate.mu, estimate.sigma))
    alm = estimates.get("alm")
    if alm is not None and facts.height_m:
        predictions.append(Prediction("almi", *almi(alm.mu, facts.height_m, alm.sigma)))
    elif alm is not None:
        notes.append(f"No predicted ALMI: {facts.missing.get('height', 'height unknown')}.")
    return predictions, notes


def criterion_inputs(predictions: list[Prediction], facts: PatientFacts) -> dict[str, float]:
    """The sarcopenia inputs the predictions give (their means), flagged as predicted."""
    inputs: dict[str, float] = {"predicted": 1}
    for prediction in predictions:
        if prediction.target.criterion_input:
            inputs[prediction.target.criterion_input] = prediction.mean
            if prediction.sd is not None:
                inputs[prediction.target.criterion_input + "_sd"] = prediction.sd
    if facts.height_m:
        inputs["height_m"] = facts.height_m
    if facts.age_years is not None:
        inputs["age_years"] = facts.age_years
    return inputs
