"""The gate's checks, one module each: a plain function that returns a result value (truthy when
the check passed, ``str()`` describing it) and the check's declaration, saying when the gate
requires it (declared.py). conformance/ wraps each in a pytest test marked with its name."""
