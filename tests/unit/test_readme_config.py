"""The README documents every configuration variable the components read (keeps it true)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_variable() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import config_table
    finally:
        sys.path.pop(0)
    readme = (ROOT / "README.md").read_text()
    missing = sorted(
        {env for _, cls in config_table.COMPONENTS for env, _, _ in config_table.rows(cls) if f"`{env}`" not in readme}
    )
    assert not missing, f"README.md lacks {missing}: regenerate its tables with `python scripts/config_table.py`"
