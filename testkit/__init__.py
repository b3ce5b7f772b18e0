"""Test support shared by `tests/` and `bench/`: the stack as processes (`stack.py`), the fault
harness and scenarios (`faults/`), fault-injecting proxies (`faultproxy.py`), an SSE reader
(`sse.py`) and an OpenAI-compatible token server (`openai_server.py`).

Product code (kernel, clients, services, gateway, cli) never imports it; the import contracts in
pyproject.toml say so and `make lint` checks them.
"""
