"""harness/core/profiles.py: each profile means the same thing wherever it runs."""

import pytest
from hypothesis import settings

from harness.core.profiles import PROFILES, register_profiles

# What each profile promises in its docstring; a random `dev` is what makes it find new cases.
DERANDOMIZED = {"dev": False, "ci": True, "thorough": False, "smoke": True}


@pytest.fixture
def loaded_profile_restored():
    before = settings._current_profile  # type: ignore[attr-defined]
    yield
    register_profiles()
    settings.load_profile(before or "default")


def test_every_profile_keeps_its_randomness_when_registered_under_a_derandomized_default(loaded_profile_restored):
    """Hypothesis loads its own derandomized `ci` profile when it sees a CI variable, and a profile
    registered without `derandomize` inherits the loaded one: `dev` was derandomized on CI only."""
    register_profiles()
    settings.load_profile("smoke")  # derandomized, as Hypothesis's CI default is
    register_profiles()
    assert set(DERANDOMIZED) == set(PROFILES)
    assert {name: settings.get_profile(name).derandomize for name in PROFILES} == DERANDOMIZED
