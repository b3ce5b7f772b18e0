"""A/B runs over real questions: the same retrieval results fetched from two storage backends,
interleaved A,B,B,A, with paired differences and bootstrap confidence intervals.

`stats` (numbers), `model` (request, samples, summary, JSON and CSV), `engine` (the run),
`runs` (saved runs in the object store), `report` (the self-contained HTML report),
`servicer` (the thin gRPC layer of `ddnrag.llm.v1.AbTestService`)."""
