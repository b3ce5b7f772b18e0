"""The embedder never sends OpenVINO/NNCF usage telemetry."""

from __future__ import annotations

import services.embedder  # noqa: F401 - importing the package declines telemetry


def test_openvino_telemetry_is_declined() -> None:
    from openvino_telemetry import Telemetry
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    assert OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.DECLINED
    t = Telemetry(app_name="ddnrag-test", app_version="0", tid="G-TEST", enable_opt_in_dialog=False)
    assert t.consent is False
