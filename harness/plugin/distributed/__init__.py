"""One gate over pytest-xdist workers: one export, one ledger, one report, one publish. Roles and
report labels (``roles``), the worker side (``worker``) and the controller side (``controller``),
as pytest-xdist itself keeps them apart.

The controller exports (or validates the given file) before any worker starts and hands the path
and sha256 to the workers through ``workerinput``; a worker hashes the file again and never exports.
Each test report carries, as plain values in ``user_properties``, the check it belongs to and the
parity statistics its test added (``ParityStats.take_delta``); the controller feeds its ledger and its parity statistics from
the reports it receives, so gate.json and summary.md hold what a single-process run would.

Benchmarks skip on workers: latency measured while other workers load the cores is wrong, and a
session whose latency checks skipped cannot pass or publish. Nothing here imports torch at module
level; the xdist hooks live on :class:`XdistHooks`, registered only where xdist is installed.
"""
