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
    settings.load_profile("default")
    register_profiles()
    settings.load_profile(before or "default")


def test_every_profile_is_the_same_when_registered_under_a_derandomized_database_less_profile(loaded_profile_restored):
    """Hypothesis loads its own `ci` profile (derandomized, no example database) when it sees a CI
    variable, and a profile registered without a parent inherits the loaded one: `dev` was
    derandomized and forgot its failing examples on CI only."""
    settings.load_profile("default")
    register_profiles()
    plain = {name: settings.get_profile(name) for name in PROFILES}
    settings.load_profile("smoke")  # derandomized and database-less, as Hypothesis's CI default is
    register_profiles()
    assert set(DERANDOMIZED) == set(PROFILES)
    assert {name: settings.get_profile(name).derandomize for name in PROFILES} == DERANDOMIZED
    assert {name: type(settings.get_profile(name).database) for name in PROFILES} == {
        name: type(profile.database) for name, profile in plain.items()
    }
    assert settings.get_profile("dev").database is not None
