"""Benchmarks: one script per headline number, each run on its own (`python bench/NAME.py`),
writing bench/results/NAME.json. A package only so that the import contracts (pyproject.toml,
`make lint`) can check what the scripts import: clients, the kernel, services for in-process
component benchmarks, and the shared test support in `testkit/`, never `tests/`."""
