"""The embedder service: texts in, dense vectors out (sentence-transformers, dynamic batching)."""

from __future__ import annotations


def _decline_openvino_telemetry() -> None:
    """OpenVINO and NNCF send usage telemetry unless the user has opted out. A service must not
    phone home: here, with no route out, the telemetry sender forks a child that hangs in DNS and
    outlives the service. Declining in-process (instead of writing ~/intel/openvino_telemetry)
    leaves the user's own setting alone."""
    try:
        from openvino_telemetry.utils import opt_in_checker
    except ImportError:  # openvino not installed: nothing to decline
        return

    def declined(self: object, enable_opt_in_dialog: bool, disable_in_ci: bool = False) -> object:
        return opt_in_checker.ConsentCheckResult.DECLINED

    opt_in_checker.OptInChecker.check = declined  # type: ignore[method-assign]


_decline_openvino_telemetry()
