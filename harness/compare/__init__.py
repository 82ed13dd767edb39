"""The parity rule as pure functions on arrays and a Tolerance: what every judge of outputs reads
(the checks, candidates, module alignment, debug)."""
