"""The embedder service: texts in, dense vectors out (sentence-transformers, dynamic batching).

The model runtimes live in the shared `embedding` package; importing it declines OpenVINO's
usage telemetry before any runtime loads.
"""

from __future__ import annotations

import embedding  # noqa: F401 - declines OpenVINO telemetry
