"""The fault harness (`harness.py`) and the scenarios (`scenarios.py`) that tests/faults and
bench/reliability.py, bench/soak.py share."""
