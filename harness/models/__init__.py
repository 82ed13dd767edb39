"""Models the gate ships with. Users point ``model = "pkg.module:callable"`` at their own."""

from harness.models.localization_net import LocalizationNet, localization_net

__all__ = ["LocalizationNet", "localization_net"]
