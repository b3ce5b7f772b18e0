"""The logistic model over `features.NAMES`: standardisation, weights and the sentence
threshold, fitted on SciFact train claims by `bench/verify.py --write-model` (never on test)
and kept in model.json beside this file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .features import NAMES

_PARAMS = json.loads((Path(__file__).with_name("model.json")).read_text())
if tuple(_PARAMS["features"]) != NAMES:
    raise RuntimeError("verify/model.json was fitted on other features: run bench/verify.py --write-model")
MEAN = np.asarray(_PARAMS["mean"], np.float64)
SCALE = np.asarray(_PARAMS["scale"], np.float64)
WEIGHTS = np.asarray(_PARAMS["weights"], np.float64)
SENTENCE_THRESHOLD = float(_PARAMS["sentence_threshold"])


def probability(x: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = WEIGHTS if weights is None else weights
    z = float(((x - MEAN) / SCALE) @ w[:-1] + w[-1])
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))
