# Loads the gate's plugin where the package is not installed (e.g. PYTHONPATH=. on a GPU box);
# installed, the pytest11 entry point named the same loads it and this line is a no-op.
pytest_plugins = ["harness.plugin.hooks"]
