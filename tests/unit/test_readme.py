"""The README documents what the code reads and serves."""

from __future__ import annotations

import re
from pathlib import Path

from function_app import app
from shared.settings import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


class TestReadme:
    def test_every_setting_is_documented(self) -> None:
        """Each setting in shared/settings.py has a row in the README's configuration table."""
        missing = [spec.name for spec in SETTINGS if f"| `{spec.name}` |" not in README]
        assert missing == []

    def test_every_route_is_documented(self) -> None:
        """Each HTTP route the app serves appears in the README as /api/<route> (parameter names aside)."""
        readme = re.sub(r"\{[^}/]*\}", "{}", README)
        routes = []
        for function in app.get_functions():
            for binding in function.get_bindings():
                route = binding.get_dict_repr().get("route")
                if route:
                    routes.append(route)
        assert routes
        missing = [r for r in routes if "/api/" + re.sub(r"\{[^}/]*\}", "{}", r) not in readme]
        assert missing == []
