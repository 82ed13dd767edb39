"""The gate's checks, one module each: a plain function that returns a result value (truthy when
the check passed, ``str()`` describing it). conformance/ wraps each in a pytest test."""
