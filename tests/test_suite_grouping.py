"""tests/conftest.py: `make test` runs every test that needs the servers on one xdist worker."""

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


def test_every_stack_test_runs_on_one_worker_under_loadgroup(pytester: pytest.Pytester, monkeypatch):
    """pytest 9.2 ignores the group pytest-xdist 3.8 writes into the node id (pytest-xdist#1386):
    each worker then started a SeaweedFS and an MLflow of its own, two stacks starting at once on
    two cores."""
    pytester.makeconftest(
        "import pytest\n"
        "from tests.conftest import pytest_configure, pytest_collection_modifyitems  # noqa: F401\n\n"
        "@pytest.fixture\n"
        "def stack():\n"
        "    return None\n"
    )
    pytester.makepyfile(
        test_grouped=(
            "import os\nfrom pathlib import Path\nimport pytest\n\n"
            "def _ran(kind, i):\n"  # xdist workers' output does not reach the controller's stdout
            "    Path(f'ran/{kind}{i}').write_text(os.environ['PYTEST_XDIST_WORKER'])\n\n"
            "@pytest.mark.parametrize('i', range(6))\n"
            "def test_with_servers(stack, i):\n"
            "    _ran('stack', i)\n\n"
            "@pytest.mark.parametrize('i', range(6))\n"
            "def test_without(i):\n"
            "    _ran('other', i)\n"
        )
    )
    (pytester.path / "ran").mkdir()
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q"],
        cwd=pytester.path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = {path.name: path.read_text() for path in (pytester.path / "ran").iterdir()}
    assert len(ran) == 12 and len(set(ran.values())) == 2, ran  # both workers ran tests
    assert len({worker for test, worker in ran.items() if test.startswith("stack")}) == 1, ran
