"""Which checks the gate has, and when each is required, declared where the check is defined:

    CHECK = declare_check("contract", order=20)                    # required in every gate
    CHECK = declare_check("invariants", required=with_invariants)  # only when the config has some

Its conformance test is marked with the same name, ``@pytest.mark.gate_check("contract")``. The
gate's own checks are the modules of harness/checks/, all imported when the gate lists its checks
(``gate_checks``), so a check a session narrowed away (``-k``, a path) is still known to be
required and is reported as not run. A check defined in a module of your own is declared when that
module is imported, i.e. when its conformance test is collected. A test marked with a name nobody
declared stops the gate at collection: a check that is silently optional would be no check.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import harness.checks

if TYPE_CHECKING:
    from harness.core.config import GateConfig
    from harness.core.ledger import Ledger


class GateSession(Protocol):
    """What a requirement reads of the gate session (harness/gate/session.py), which sits above the
    checks and hands itself down."""

    @property
    def config(self) -> GateConfig: ...

    @property
    def benchmarks_collected(self) -> bool: ...

    @property
    def baseline_spec(self) -> object | None: ...

    @property
    def ledger(self) -> Ledger: ...


Requirement = Callable[[GateSession], bool]


def always(gate: GateSession) -> bool:
    return True


def never(gate: GateSession) -> bool:
    return False


def with_dims(gate: GateSession) -> bool:
    """The config declares a symbolic (e.g. batch) dimension."""
    return bool(gate.config.dims)


def with_invariants(gate: GateSession) -> bool:
    return bool(gate.config.invariants)


def with_benchmarks(gate: GateSession) -> bool:
    """The session runs benchmarks/."""
    return gate.benchmarks_collected


def with_baseline(gate: GateSession) -> bool:
    """--gate-baseline was given: its absence fails the gate."""
    return gate.baseline_spec is not None


def unless_skipped(check: str) -> Requirement:
    """Required unless its tests skipped, each saying why it could not judge (turned off, a file
    without the information it needs, no float64 run): a statement in the report, not a failure."""

    def requirement(gate: GateSession) -> bool:
        return gate.ledger.record_for(check).status != "skipped"

    return requirement


@dataclass(frozen=True)
class GateCheck:
    name: str
    required: Requirement = always  # for the gate's verdict
    for_release: bool = False  # required for a release even where the verdict does not need it
    listed: bool = True  # in every report, run or not; else from the moment its tests are collected
    order: int = 100  # its place in the reports
    module: str = ""  # the module that declared it

    @property
    def own(self) -> bool:
        """One of the gate's own checks: part of every session. A check declared in a module of
        yours belongs to the sessions that collect a test marked with it; declarations outlive a
        session in the process (its module stays imported), so another project's gate in the
        same process must not require it."""
        return self.module.startswith("harness.")


_DECLARED: dict[str, GateCheck] = {}


def declare_check(
    name: str, *, required: Requirement = always, for_release: bool = False, listed: bool = True, order: int = 100
) -> GateCheck:
    """Declare the gate check ``name`` (see the module's doc); returns the declaration."""
    module = sys._getframe(1).f_globals.get("__name__", "")
    check = GateCheck(name, required, for_release, listed, order, module)
    _DECLARED[name] = check
    return check


def gate_checks() -> list[GateCheck]:
    """Every declared check in report order, the gate's own included (importing them declares them)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(harness.checks.__path__):
        importlib.import_module(f"harness.checks.{module.name}")
    return sorted(_DECLARED.values(), key=lambda check: check.order)


def undeclared_problem(name: str) -> str | None:
    """Why a test marked ``gate_check(name)`` cannot count, or None when ``name`` is declared."""
    if name in _DECLARED or name in {check.name for check in gate_checks()}:
        return None
    return (
        f"gate_check({name!r}) names no declared check, so the gate could not say whether it is required; "
        f"declare it in the check's module: CHECK = declare_check({name!r}, required=...) "
        "(harness/checks/declared.py)"
    )
