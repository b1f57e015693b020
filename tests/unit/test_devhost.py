"""The dev host's pure parts: route templates, NCRONTAB schedules and settings loading."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from scripts.devhost import (
    DEV_SIGNING_KEY_FILE,
    CronSchedule,
    DevHostError,
    RouteTable,
    RouteTemplate,
    ensure_dev_signing_key,
    load_local_settings,
    read_route_prefix,
    resolve_app_settings,
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class TestRouteTemplate:
    def test_literal_route_matches_itself_case_insensitively(self) -> None:
        """Literal text matches regardless of case, as in ASP.NET Core."""
        route = RouteTemplate.parse("workflows")
        assert route.match("/workflows") == {}
        assert route.match("/Workflows") == {}
        assert route.match("/workflows/") == {}
        assert route.match("/workflow") is None
        assert route.match("/workflows/x") is None

    def test_parameter_captures_one_segment(self) -> None:
        """A ``{name}`` parameter captures exactly one path segment."""
        route = RouteTemplate.parse("workflows/{name}")
        assert route.match("/workflows/orders") == {"name": "orders"}
        assert route.match("/workflows") is None
        assert route.match("/workflows/orders/runs") is None

    def test_route_values_are_percent_decoded(self) -> None:
        """Route values arrive decoded, an encoded slash included."""
        route = RouteTemplate.parse("workflows/{name}")
        assert route.match("/workflows/a%20b") == {"name": "a b"}
        assert route.match("/workflows/a%2Fb") == {"name": "a/b"}

    def test_optional_parameter_may_be_absent(self) -> None:
        """An optional ``{id?}`` matches with or without its segment and is left out when absent."""
        route = RouteTemplate.parse("runs/{id?}")
        assert route.match("/runs/r1") == {"id": "r1"}
        assert route.match("/runs") == {}

    def test_default_value_fills_an_absent_parameter(self) -> None:
        """A ``{page=1}`` parameter takes its default when the segment is missing."""
        route = RouteTemplate.parse("items/{page=1}")
        assert route.match("/items") == {"page": "1"}
        assert route.match("/items/3") == {"page": "3"}

    def test_catch_all_takes_the_rest_of_the_path(self) -> None:
        """A ``{*rest}`` parameter captures every remaining segment, or nothing."""
        route = RouteTemplate.parse("files/{*rest}")
        assert route.match("/files/a/b/c.txt") == {"rest": "a/b/c.txt"}
        assert route.match("/files") == {}

    def test_known_constraints_are_checked(self) -> None:
        """``int`` and ``alpha`` constraints reject values of the wrong shape."""
        assert RouteTemplate.parse("runs/{id:int}").match("/runs/42") == {"id": "42"}
        assert RouteTemplate.parse("runs/{id:int}").match("/runs/abc") is None
        assert RouteTemplate.parse("w/{name:alpha}").match("/w/abc") == {"name": "abc"}
        assert RouteTemplate.parse("w/{name:alpha}").match("/w/abc1") is None

    def test_unknown_constraints_are_ignored(self) -> None:
        """Constraints the dev host does not know, such as ``regex(...)``, accept any value."""
        route = RouteTemplate.parse(r"w/{name:regex(^[a-z]{{3}}$)}")
        assert route.match("/w/anything") == {"name": "anything"}

    def test_mixed_segment_splits_on_its_literal(self) -> None:
        """A segment like ``{name}.{ext}`` splits at the last dot, like ASP.NET."""
        route = RouteTemplate.parse("files/{name}.{ext}")
        assert route.match("/files/a.b.json") == {"name": "a.b", "ext": "json"}

    @pytest.mark.parametrize("template", ["a/{name", "a/name}", "a/{x}/{x}", "a/{*rest}/b", "a//b", "a/{1x}"])
    def test_malformed_templates_are_rejected(self, template: str) -> None:
        """Broken braces, repeated names, a catch-all before the end and empty segments raise."""
        with pytest.raises(ValueError, match="route"):
            RouteTemplate.parse(template)


class TestRouteTable:
    def _table(self, *templates: str, methods: tuple[str, ...] | None = None) -> RouteTable[str]:
        table: RouteTable[str] = RouteTable()
        for template in templates:
            table.add(template, methods, template)
        return table

    def test_literal_segment_beats_a_parameter(self) -> None:
        """``workflows/list`` wins over ``workflows/{name}`` whatever the registration order."""
        for order in (("workflows/{name}", "workflows/list"), ("workflows/list", "workflows/{name}")):
            table = self._table(*order)
            assert table.resolve("GET", "/workflows/list").target == "workflows/list"
            assert table.resolve("GET", "/workflows/other").target == "workflows/{name}"

    def test_later_literal_segment_decides_between_equal_prefixes(self) -> None:
        """``workflows/{name}/runs`` beats ``workflows/{name}/{child}`` for ``.../runs``."""
        table = self._table("workflows/{name}/{child}", "workflows/{name}/runs")
        match = table.resolve("POST", "/workflows/orders/runs")
        assert match.target == "workflows/{name}/runs"
        assert match.route_params == {"name": "orders"}
        assert table.resolve("POST", "/workflows/orders/other").route_params == {"name": "orders", "child": "other"}

    def test_action_route_beats_a_catch_all(self) -> None:
        """``runs/{id}/cancel`` beats ``runs/{*rest}``, and the catch-all still takes the rest."""
        table = self._table("runs/{*rest}", "runs/{id}/cancel", "runs/{id}")
        assert table.resolve("POST", "/runs/r1/cancel").target == "runs/{id}/cancel"
        assert table.resolve("GET", "/runs/r1").target == "runs/{id}"
        assert table.resolve("GET", "/runs/r1/a/b").target == "runs/{*rest}"

    def test_constrained_parameter_beats_a_plain_one(self) -> None:
        """``items/{id:int}`` is tried before ``items/{name}``."""
        table = self._table("items/{name}", "items/{id:int}")
        assert table.resolve("GET", "/items/7").target == "items/{id:int}"
        assert table.resolve("GET", "/items/seven").target == "items/{name}"

    def test_method_mismatch_reports_the_allowed_methods(self) -> None:
        """A path that matches only under other methods yields no target and the allowed set (405)."""
        table: RouteTable[str] = RouteTable()
        table.add("workflows/{name}", ["PUT", "GET"], "one")
        table.add("workflows/{name}", ["delete"], "two")
        match = table.resolve("POST", "/workflows/x")
        assert match.target is None
        assert match.path_matched
        assert match.allowed_methods == {"PUT", "GET", "DELETE"}

    def test_method_filter_comes_before_precedence(self) -> None:
        """A lower-precedence route that accepts the method wins over a better one that does not."""
        table: RouteTable[str] = RouteTable()
        table.add("workflows/list", ["GET"], "list")
        table.add("workflows/{name}", ["PUT"], "put")
        assert table.resolve("PUT", "/workflows/list").target == "put"

    def test_no_route_means_not_found(self) -> None:
        """A path no template matches yields no target and no allowed methods (404)."""
        match = self._table("workflows/{name}").resolve("GET", "/runs/1")
        assert match.target is None
        assert not match.path_matched

    def test_routes_without_methods_accept_any_method(self) -> None:
        """A function that names no methods answers every method."""
        table = self._table("health")
        assert table.resolve("DELETE", "/health").target == "health"


class TestCronSchedule:
    def test_fields_accept_every_documented_form(self) -> None:
        """Star, step, range, list, stepped range and names parse to the expected sets."""
        schedule = CronSchedule.parse("*/15 0-10/5 1,2,23 * Jan-Mar Mon-Fri")
        assert schedule.seconds == {0, 15, 30, 45}
        assert schedule.minutes == {0, 5, 10}
        assert schedule.hours == {1, 2, 23}
        assert schedule.days == set(range(1, 32))
        assert schedule.months == {1, 2, 3}
        assert schedule.weekdays == {1, 2, 3, 4, 5}

    def test_sunday_is_zero_or_seven(self) -> None:
        """Day-of-week 7 means Sunday, like 0."""
        assert CronSchedule.parse("0 0 0 * * 7").weekdays == {0}
        assert CronSchedule.parse("0 0 0 * * *").weekdays == set(range(7))

    def test_start_with_step_runs_to_the_end_of_the_range(self) -> None:
        """``50/5`` in the second field means 50, 55."""
        assert CronSchedule.parse("50/5 * * * * *").seconds == {50, 55}

    @pytest.mark.parametrize(
        ("expression", "problem"),
        [
            ("0 */5 * * *", "6 fields"),
            ("60 * * * * *", "second"),
            ("0 0 24 * * *", "hour"),
            ("0 0 0 0 * *", "day"),
            ("0 0 0 * 13 *", "month"),
            ("0 0 0 * * 8", "day-of-week"),
            ("*/0 * * * * *", "step"),
            ("0 5-1 * * * *", "backwards"),
            ("0 x * * * *", "not a number"),
            ("0 1,,2 * * * *", "empty"),
        ],
    )
    def test_invalid_expressions_name_the_problem(self, expression: str, problem: str) -> None:
        """A bad expression raises ValueError naming the field or the mistake."""
        with pytest.raises(ValueError, match=problem):
            CronSchedule.parse(expression)

    def test_every_five_minutes(self) -> None:
        """``0 */5 * * * *`` fires on the next five-minute mark, strictly after the given time."""
        schedule = CronSchedule.parse("0 */5 * * * *")
        assert schedule.next_after(_at("2025-03-10T10:02:30")) == _at("2025-03-10T10:05:00")
        assert schedule.next_after(_at("2025-03-10T10:05:00")) == _at("2025-03-10T10:10:00")
        assert schedule.next_after(_at("2025-03-10T23:57:00")) == _at("2025-03-11T00:00:00")

    def test_every_second_steps_by_one_second(self) -> None:
        """``* * * * * *`` fires on the next whole second."""
        schedule = CronSchedule.parse("* * * * * *")
        assert schedule.next_after(_at("2025-03-10T10:00:00.250000")) == _at("2025-03-10T10:00:01")

    def test_weekday_schedule_skips_the_weekend(self) -> None:
        """``0 30 9 * * 1-5`` after Friday 09:30 fires on Monday 09:30."""
        schedule = CronSchedule.parse("0 30 9 * * 1-5")
        friday = _at("2025-03-14T09:30:00")
        assert friday.weekday() == 4
        assert schedule.next_after(friday) == _at("2025-03-17T09:30:00")

    def test_rolls_over_month_and_year(self) -> None:
        """A first-of-the-month schedule crosses month and year boundaries."""
        schedule = CronSchedule.parse("0 0 0 1 * *")
        assert schedule.next_after(_at("2025-01-31T12:00:00")) == _at("2025-02-01T00:00:00")
        assert schedule.next_after(_at("2025-12-15T00:00:00")) == _at("2026-01-01T00:00:00")

    def test_leap_day_waits_for_a_leap_year(self) -> None:
        """``29 Feb`` is found in the next leap year."""
        schedule = CronSchedule.parse("0 0 12 29 2 *")
        assert schedule.next_after(_at("2025-03-01T00:00:00")) == _at("2028-02-29T12:00:00")

    def test_day_and_weekday_must_both_match(self) -> None:
        """As in NCrontab, day-of-month 13 with Friday means Friday the 13th."""
        schedule = CronSchedule.parse("0 0 0 13 * Fri")
        assert schedule.next_after(_at("2025-01-01T00:00:00")) == _at("2025-06-13T00:00:00")

    def test_impossible_date_raises(self) -> None:
        """A schedule that names 30 February has no next occurrence."""
        with pytest.raises(ValueError, match="no occurrence"):
            CronSchedule.parse("0 0 0 30 2 *").next_after(_at("2025-01-01T00:00:00"))

    def test_times_are_utc(self) -> None:
        """An aware time in another zone is converted; a naive one is read as UTC."""
        schedule = CronSchedule.parse("0 0 * * * *")
        plus_two = datetime(2025, 3, 10, 12, 30, tzinfo=timezone(timedelta(hours=2)))
        assert schedule.next_after(plus_two) == _at("2025-03-10T11:00:00")
        assert schedule.next_after(datetime(2025, 3, 10, 12, 30)) == _at("2025-03-10T13:00:00")
        assert schedule.next_after(plus_two).tzinfo is UTC

    def test_matches_agrees_with_next_after(self) -> None:
        """The computed occurrence is itself a match and the second before it is not."""
        schedule = CronSchedule.parse("30 15 */6 * * *")
        occurrence = schedule.next_after(_at("2025-03-10T07:00:00"))
        assert occurrence == _at("2025-03-10T12:15:30")
        assert schedule.matches(occurrence)
        assert not schedule.matches(occurrence - timedelta(seconds=1))


class TestResolveAppSettings:
    def test_percent_names_are_replaced(self) -> None:
        """``%NAME%`` takes the setting's value; text around it is kept."""
        env = {"POLL": "0 */1 * * * *"}
        assert resolve_app_settings("%POLL%", env) == "0 */1 * * * *"
        assert resolve_app_settings("0 0 %H% * * *", {"H": "5"}) == "0 0 5 * * *"
        assert resolve_app_settings("0 0 0 * * *", {}) == "0 0 0 * * *"

    def test_missing_setting_raises(self) -> None:
        """An unset or empty setting is an error naming it."""
        with pytest.raises(ValueError, match="POLL"):
            resolve_app_settings("%POLL%", {"POLL": " "})


class TestLocalSettings:
    def _write(self, path: Path, values: dict[str, object]) -> None:
        path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")

    def test_local_settings_win_over_the_sample(self, tmp_path: Path) -> None:
        """``local.settings.json`` is read when present and the sample is then ignored."""
        self._write(tmp_path / "local.settings.json", {"A": "local"})
        self._write(tmp_path / "local.settings.sample.json", {"A": "sample", "B": "sample"})
        env: dict[str, str] = {}
        assert load_local_settings(tmp_path, env) == tmp_path / "local.settings.json"
        assert env == {"A": "local"}

    def test_sample_is_the_fallback(self, tmp_path: Path) -> None:
        """Without ``local.settings.json`` the sample's values are used."""
        self._write(tmp_path / "local.settings.sample.json", {"A": "sample"})
        env: dict[str, str] = {}
        assert load_local_settings(tmp_path, env) == tmp_path / "local.settings.sample.json"
        assert env == {"A": "sample"}

    def test_environment_is_never_overridden(self, tmp_path: Path) -> None:
        """A variable already set, even to an empty string, keeps its value."""
        self._write(tmp_path / "local.settings.json", {"A": "file", "B": "file", "C": "file"})
        env = {"A": "shell", "B": ""}
        load_local_settings(tmp_path, env)
        assert env == {"A": "shell", "B": "", "C": "file"}

    def test_process_environment_is_the_default_target(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an explicit mapping the values go to ``os.environ``, shell values first."""
        monkeypatch.setenv("HF_TEST_SHELL", "shell")
        monkeypatch.delenv("HF_TEST_FILE", raising=False)
        self._write(tmp_path / "local.settings.json", {"HF_TEST_SHELL": "file", "HF_TEST_FILE": "file"})
        load_local_settings(tmp_path)
        assert os.environ["HF_TEST_SHELL"] == "shell"
        assert os.environ["HF_TEST_FILE"] == "file"
        monkeypatch.delenv("HF_TEST_FILE")

    def test_non_string_values_become_app_setting_text(self, tmp_path: Path) -> None:
        """JSON booleans, numbers and null become the strings an app setting would hold."""
        self._write(tmp_path / "local.settings.json", {"T": True, "F": False, "N": 5, "Z": None})
        env: dict[str, str] = {}
        load_local_settings(tmp_path, env)
        assert env == {"T": "true", "F": "false", "N": "5", "Z": ""}

    def test_no_file_is_not_an_error(self, tmp_path: Path) -> None:
        """A folder without settings files changes nothing."""
        env: dict[str, str] = {}
        assert load_local_settings(tmp_path, env) is None
        assert env == {}

    def test_invalid_json_is_reported(self, tmp_path: Path) -> None:
        """A malformed file raises DevHostError naming it."""
        (tmp_path / "local.settings.json").write_text("{not json", encoding="utf-8")
        with pytest.raises(DevHostError, match=r"local\.settings\.json"):
            load_local_settings(tmp_path, {})


class TestDevSigningKey:
    def test_creates_a_private_key_file_once(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """An empty setting gets a random key stored with mode 0600; the key itself is never logged."""
        env = {"HOOKFLOW_SIGNING_KEYS": ""}
        with caplog.at_level(logging.INFO, logger="hookflow.devhost"):
            assert ensure_dev_signing_key(tmp_path, env)
        key_file = tmp_path / DEV_SIGNING_KEY_FILE
        key = env["HOOKFLOW_SIGNING_KEYS"]
        assert len(key) >= 32
        assert key_file.read_text(encoding="utf-8").strip() == key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "dev key" in caplog.text
        assert key not in caplog.text

    def test_reuses_the_stored_key(self, tmp_path: Path) -> None:
        """A second start reads the same key, so callback URLs stay valid across restarts."""
        first: dict[str, str] = {}
        second: dict[str, str] = {}
        ensure_dev_signing_key(tmp_path, first)
        ensure_dev_signing_key(tmp_path, second)
        assert first["HOOKFLOW_SIGNING_KEYS"] == second["HOOKFLOW_SIGNING_KEYS"]

    def test_configured_keys_are_left_alone(self, tmp_path: Path) -> None:
        """A configured key is kept and no file is written."""
        env = {"HOOKFLOW_SIGNING_KEYS": "configured-key-0123456789"}
        assert not ensure_dev_signing_key(tmp_path, env)
        assert env["HOOKFLOW_SIGNING_KEYS"] == "configured-key-0123456789"
        assert not (tmp_path / DEV_SIGNING_KEY_FILE).exists()


class TestRoutePrefix:
    def test_reads_host_json(self, tmp_path: Path) -> None:
        """``extensions.http.routePrefix`` is used, slashes trimmed, an empty prefix allowed."""
        host_json = tmp_path / "host.json"
        host_json.write_text(json.dumps({"extensions": {"http": {"routePrefix": "/hooks/"}}}), encoding="utf-8")
        assert read_route_prefix(host_json) == "hooks"
        host_json.write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}), encoding="utf-8")
        assert read_route_prefix(host_json) == ""

    def test_defaults_to_api(self, tmp_path: Path) -> None:
        """Without host.json or without the key the prefix is ``api``, as on the host."""
        assert read_route_prefix(tmp_path / "host.json") == "api"
        (tmp_path / "host.json").write_text('{"version": "2.0"}', encoding="utf-8")
        assert read_route_prefix(tmp_path / "host.json") == "api"
