"""Guardrails: pluggable input and output checks with a visible fail mode.

`base` (verdicts, the runner and its fail mode), `builtin` (length limits, deny-list), `redact`
(e-mail addresses and phone numbers in answers), `injection` (passages that try to instruct the
model are quoted as data), `remote` (NeMo Guardrails, a content-safety model over the OpenAI chat
protocol, the OpenAI moderation protocol), `config` (building them from settings).
"""
