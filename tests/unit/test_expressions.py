"""WDL expressions: classification of strings, parsing, evaluation, references and validation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from shared import expressions
from shared.errors import ExpressionError
from shared.expressions import (
    Function,
    References,
    compile_value,
    evaluate_value,
    find_problems,
    join_path,
    register_function,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def _trigger() -> dict[str, Any]:
    return {
        "headers": {"Content-Type": "application/json"},
        "body": {
            "name": "Ann",
            "age": 42,
            "score": 2.5,
            "active": True,
            "nothing": None,
            "tags": ["a", "b"],
            "items": [{"id": 1, "sku": "X-1"}, {"id": 2, "sku": "Y-2"}],
            "address": {"city": "Oslo", "zip": None},
            "first name": "Ann Marie",
            "null": "a key named null",
        },
    }


def _actions() -> dict[str, Any]:
    return {
        "Create_job": {"statusCode": 202, "headers": {"Location": "https://jobs.test/1"}, "body": {"id": "job-1"}},
        "Empty": {"statusCode": 204, "headers": {}},
    }


@dataclass
class FakeContext:
    """An in-memory run: trigger outputs, action outputs, a callback URL and a fixed clock."""

    trigger: Any = field(default_factory=_trigger)
    actions: dict[str, Any] = field(default_factory=_actions)
    url: str | None = "https://hooks.test/callback?sig=abc"
    now: datetime = NOW

    def trigger_outputs(self) -> Any:
        return self.trigger

    def action_outputs(self, name: str) -> Any:
        if name not in self.actions:
            raise ExpressionError(f"action '{name}' has no outputs yet")
        return self.actions[name]

    def callback_url(self) -> str:
        if self.url is None:
            raise ExpressionError("there is no callback URL here")
        return self.url

    def utc_now(self) -> datetime:
        return self.now


def run(value: Any, ctx: FakeContext | None = None) -> Any:
    return evaluate_value(value, ctx or FakeContext())


def compile_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        compile_value(text)
    return caught.value


def evaluation_error(text: str, ctx: FakeContext | None = None) -> ExpressionError:
    compiled = compile_value(text)
    with pytest.raises(ExpressionError) as caught:
        compiled.evaluate(ctx or FakeContext())
    return caught.value


class TestLiterals:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@'abc'", "abc"),
            ("@''", ""),
            ("@'it''s'", "it's"),
            ("@42", 42),
            ("@-1", -1),
            ("@2.5", 2.5),
            ("@1e3", 1000.0),
            ("@true", True),
            ("@false", False),
            ("@null", None),
            ("@TRUE", True),
        ],
    )
    def test_literal_value(self, text: str, expected: Any) -> None:
        """Each literal kind evaluates to its JSON value and keeps its type."""
        result = run(text)
        assert result == expected
        assert type(result) is type(expected)


class TestStringClassification:
    @pytest.mark.parametrize(
        "text",
        [
            "plain text",
            "",
            "mail a@b.com",
            " @notAnExpression()",
            "{not: braces}",
        ],
    )
    def test_literal_strings_are_unchanged(self, text: str) -> None:
        """Strings that neither start with '@' nor contain '@{' are constants, returned as written."""
        compiled = compile_value(text)
        assert compiled.is_constant
        assert compiled.evaluate(FakeContext()) == text

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@@foo", "@foo"),
            ("@@", "@"),
            ("@@{triggerBody()}", "@{triggerBody()}"),
            ("price @@{x}", "price @{x}"),
            ("a@@b", "a@@b"),
        ],
    )
    def test_at_at_escapes(self, text: str, expected: str) -> None:
        """'@@' at the start and '@@{' anywhere stand for a literal '@' and '@{'."""
        compiled = compile_value(text)
        assert compiled.is_constant
        assert compiled.evaluate(FakeContext()) == expected

    def test_escape_and_interpolation_in_one_string(self) -> None:
        """An escaped '@@{' stays literal while a later '@{...}' is still interpolated."""
        assert run("x @@{y} @{triggerBody()?['name']}") == "x @{y} Ann"

    def test_leading_at_at_makes_the_whole_string_literal(self) -> None:
        """A string starting with '@@' is a literal even if it contains '@{' later."""
        assert run("@@{a} @{triggerBody()}") == "@{a} @{triggerBody()}"


class TestPropertyAccess:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@triggerBody()['name']", "Ann"),
            ("@triggerBody().name", "Ann"),
            ("@triggerBody()['first name']", "Ann Marie"),
            ("@triggerBody().null", "a key named null"),
            ("@triggerBody()?['items']?[0]?['sku']", "X-1"),
            ("@triggerBody()?['items'][1].id", 2),
            ("@triggerBody()[concat('na', 'me')]", "Ann"),
            ("@triggerOutputs()['headers']['Content-Type']", "application/json"),
            ("@json('[[1, [2, 3]]]')[0][1][0]", 2),
        ],
    )
    def test_access_forms_and_chains(self, text: str, expected: Any) -> None:
        """Bracket, dot, null-safe and index accessors can be chained in any order."""
        assert run(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "@triggerBody()?['missing']",
            "@triggerBody()?.missing",
            "@triggerBody()['nothing']?['x']",
            "@triggerBody().address?.zip?.code",
            "@triggerBody()['tags']?[5]",
            "@null?['x']",
        ],
    )
    def test_null_safe_access_yields_null(self, text: str) -> None:
        """With '?', a missing property, a null base or an index out of range yields null."""
        assert run(text) is None

    def test_present_null_is_returned_without_question_mark(self) -> None:
        """A property that exists with a null value is returned as null even without '?'."""
        assert run("@triggerBody()['nothing']") is None


class TestInterpolation:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@{triggerBody()?['name']}", "Ann"),
            ("@{triggerBody()?['active']}", "true"),
            ("@{triggerBody()?['nothing']}", ""),
            ("@{triggerBody()?['tags']}", '["a","b"]'),
            ("@{triggerBody()?['address']}", '{"city":"Oslo","zip":null}'),
            ('@{json(\'{"k": "é"}\')}', '{"k":"é"}'),
        ],
    )
    def test_single_segment_becomes_text(self, text: str, expected: str) -> None:
        """A lone '@{...}' always yields a string: JSON text for non-strings, '' for null."""
        assert run(text) == expected

    def test_several_segments_and_literal_text(self) -> None:
        """Literal text around and between segments is kept verbatim."""
        text = "Hi @{triggerBody().name}, you are @{triggerBody().age}; tags=@{triggerBody().tags}!"
        assert run(text) == 'Hi Ann, you are 42; tags=["a","b"]!'

    def test_adjacent_segments(self) -> None:
        """Segments can touch each other with no text in between."""
        assert run("@{1}@{'-'}@{2}") == "1-2"

    def test_closing_brace_inside_string_literal(self) -> None:
        """A '}' inside a quoted string does not end the segment."""
        assert run("[@{concat('}', '{')}]") == "[}{]"

    def test_whitespace_inside_segment(self) -> None:
        """Whitespace around the expression inside '@{ }' is ignored."""
        assert run("x=@{  triggerBody().age  }") == "x=42"

    def test_at_sign_not_followed_by_brace_is_text(self) -> None:
        """An '@' inside a string that does not open '@{' is plain text."""
        assert run("@{triggerBody().name}@example.com") == "Ann@example.com"


class TestWholeExpression:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@triggerBody()?['address']", {"city": "Oslo", "zip": None}),
            ("@triggerBody()?['age']", 42),
            ("@triggerBody()?['tags']", ["a", "b"]),
            ("@triggerBody()?['nothing']", None),
        ],
    )
    def test_keeps_the_type_of_the_result(self, text: str, expected: Any) -> None:
        """'@expr' yields the expression's value as is, not its text."""
        assert run(text) == expected

    def test_result_does_not_alias_run_state(self) -> None:
        """Mutating an evaluated object leaves the context's data untouched."""
        ctx = FakeContext()
        result = compile_value("@triggerBody()").evaluate(ctx)
        result["name"] = "changed"
        result["tags"].append("z")
        assert ctx.trigger["body"]["name"] == "Ann"
        assert ctx.trigger["body"]["tags"] == ["a", "b"]


class TestContextFunctions:
    def test_trigger_body(self) -> None:
        """triggerBody() is the trigger outputs' body."""
        assert run("@triggerBody()") == _trigger()["body"]

    def test_trigger_outputs(self) -> None:
        """triggerOutputs() is the whole outputs object with headers and body."""
        assert run("@triggerOutputs()") == _trigger()

    def test_body_of_action(self) -> None:
        """body('A') is that action's outputs' body."""
        assert run("@body('Create_job')") == {"id": "job-1"}

    def test_body_of_action_without_body_is_null(self) -> None:
        """body('A') is null when the action's outputs carry no body."""
        assert run("@body('Empty')") is None

    def test_outputs_of_action(self) -> None:
        """outputs('A') is the action's statusCode, headers and body."""
        assert run("@outputs('Create_job')") == _actions()["Create_job"]
        assert run("@outputs('Create_job')['headers']['Location']") == "https://jobs.test/1"

    def test_dynamic_action_name(self) -> None:
        """The action name may be computed at run time."""
        assert run("@body(concat('Create', '_job')).id") == "job-1"

    def test_list_callback_url(self) -> None:
        """listCallbackUrl() is the context's callback URL."""
        assert run("@listCallbackUrl()") == "https://hooks.test/callback?sig=abc"

    def test_utc_now_format(self) -> None:
        """utcNow() is ISO 8601 in UTC with seven fractional digits and a 'Z', like Logic Apps."""
        assert run("@utcNow()") == "2024-05-06T07:08:09.1234560Z"

    def test_utc_now_converts_other_offsets(self) -> None:
        """A clock in another time zone is converted to UTC."""
        clock = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        assert run("@utcNow()", FakeContext(now=clock)) == "2024-05-06T07:08:09.0000000Z"

    def test_utc_now_rejects_naive_clock(self) -> None:
        """A naive datetime from the clock is an error rather than a guess."""
        error = evaluation_error("@utcNow()", FakeContext(now=datetime(2024, 1, 1)))
        assert "naive" in error.message

    def test_guid_is_fresh_uuid(self) -> None:
        """guid() yields a new lower-case hyphenated UUID on each evaluation."""
        compiled = compile_value("@guid()")
        first, second = compiled.evaluate(FakeContext()), compiled.evaluate(FakeContext())
        pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
        assert re.fullmatch(pattern, first)
        assert first != second


class TestPureFunctions:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("@concat('n=', 1, ' ', true, null)", "n=1 true"),
            ("@string(null)", ""),
            ("@string(json('{\"a\": [1]}'))", '{"a":[1]}'),
            ("@int(' -7 ')", -7),
            ('@json(\'{"a": {"b": [true, null]}}\')', {"a": {"b": [True, None]}}),
            ("@coalesce(null, null, 'x', 'y')", "x"),
            ("@coalesce(triggerBody()?['missing'], 'default')", "default"),
            ("@equals('a', 'A')", False),
            ("@equals(1, 1.0)", True),
            ("@equals(1, true)", False),
            ("@equals(json('{\"a\":[1,2]}'), json('{\"a\":[1,2]}'))", True),
            ("@not(false)", True),
            ("@and(true, false)", False),
            ("@or(false, true)", True),
            ("@if(equals(1, 2), 'yes', 'no')", "no"),
            ("@toLower('MiXeD')", "mixed"),
            ("@toUpper('MiXeD')", "MIXED"),
            ("@length(triggerBody().items)", 2),
        ],
    )
    def test_function_result(self, text: str, expected: Any) -> None:
        """Each pure function returns the documented value."""
        result = run(text)
        assert result == expected
        assert type(result) is type(expected)

    @pytest.mark.parametrize(
        "text",
        ["@toLower('AB')", "@TOLOWER('AB')", "@ToLoWeR('AB')"],
    )
    def test_function_names_are_case_insensitive(self, text: str) -> None:
        """Function names match whatever their case."""
        assert run(text) == "ab"

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("@int('12abc')", "int() cannot convert"),
            ("@int(2.5)", "int() cannot convert"),
            ("@json('{not json')", "json() could not parse"),
            ("@not('yes')", "not() expects a boolean, got string"),
            ("@and(true, 1)", "and() expects booleans, got number"),
            ("@if(null, 1, 2)", "if() expects a boolean condition, got null"),
            ("@length(42)", "length() expects a string or an array, got number"),
            ("@body(1)", "body() expects an action name, got number"),
        ],
    )
    def test_bad_argument_types(self, text: str, fragment: str) -> None:
        """A function given a value it cannot handle raises an ExpressionError at the call."""
        error = evaluation_error(text)
        assert fragment in error.message
        assert error.position == 1


class TestCompileErrors:
    @pytest.mark.parametrize(
        ("text", "fragment", "position"),
        [
            ("@'abc", "unterminated string literal", 1),
            ("@concat('a'", "expected ',' or ')' but found end of expression", 11),
            ("@concat('a'))", "unexpected ')' after the end of the expression", 12),
            ("@(1)", "unexpected '('", 1),
            ("@triggerBody()['a'", "expected ']' but found end of expression", 18),
            ("@foo()", "unknown function 'foo'", 1),
            ("x @{ foo()}", "unknown function 'foo'", 5),
            ("@equals(1)", "function 'equals' expects 2 arguments, got 1", 1),
            ("@concat()", "function 'concat' expects at least 1 argument, got 0", 1),
            ("@toLower('a', equals(1))", "function 'equals' expects 2 arguments, got 1", 14),
            ("@triggerBody() x", "unexpected 'x' after the end of the expression", 15),
            ("@triggerBody", "expected '(' after 'triggerBody' but found end of expression", 12),
            ("@triggerBody()?x", "expected '[' or '.' after '?' but found 'x'", 15),
            ("@", "empty expression", 1),
            ("a @{} b", "empty expression", 4),
            ("a @{triggerBody()", "'@{' is never closed", 2),
            ("@1 + 2", "unexpected character '+'", 3),
            ("@triggerBody()}", "unexpected character '}'", 14),
            ("@1abc", "invalid number '1abc'", 1),
            ("@1e999", "out of range", 1),
        ],
    )
    def test_error_message_and_position(self, text: str, fragment: str, position: int) -> None:
        """Syntax, name and arity errors are raised at compile time with the offset in the JSON string."""
        error = compile_error(text)
        assert fragment in error.message
        assert error.position == position

    def test_deep_nesting_is_rejected(self) -> None:
        """Pathologically deep nesting is a clean ExpressionError, not a RecursionError."""
        text = "@" + "concat(" * 150 + "'x'" + ")" * 150
        assert "nests deeper" in compile_error(text).message

    def test_long_accessor_chain_is_rejected(self) -> None:
        """A very long accessor chain counts towards the nesting limit too."""
        assert "nests deeper" in compile_error("@json('[]')" + "[0]" * 150).message

    def test_moderate_nesting_is_fine(self) -> None:
        """Nesting well under the limit compiles and evaluates."""
        assert run("@" + "concat(" * 30 + "'x'" + ")" * 30) == "x"

    def test_compile_value_reports_first_error_in_nested_value(self) -> None:
        """Compiling a structure raises for a bad string anywhere inside it."""
        with pytest.raises(ExpressionError, match="unknown function 'nope'"):
            compile_value({"a": [1, {"b": "@nope()"}]})


class TestEvaluationErrors:
    @pytest.mark.parametrize(
        ("text", "fragment", "position"),
        [
            ("@triggerBody()['missing']", "property 'missing' doesn't exist", 14),
            ("@triggerBody()?['address']['country']", "property 'country' doesn't exist", 26),
            ("@triggerBody()['nothing']['x']", "cannot select property 'x' of null", 25),
            ("@triggerBody()['age']['x']", "cannot select property 'x' of a number", 21),
            ("@triggerBody().name[0]", "cannot select index 0 of a string", 19),
            ("@triggerBody().tags['x']", "cannot select property 'x' of an array", 19),
            ("@triggerBody().tags[2]", "index 2 is out of range for an array of length 2", 19),
            ("x @{triggerBody().nope} y", "property 'nope' doesn't exist", 17),
            ("@body('Unknown')", "action 'Unknown' has no outputs yet", 1),
            ("@concat('a', body('Unknown'))", "action 'Unknown' has no outputs yet", 13),
        ],
    )
    def test_error_message_and_position(self, text: str, fragment: str, position: int) -> None:
        """Run-time failures raise ExpressionError with the offset of the failing accessor or call."""
        error = evaluation_error(text)
        assert fragment in error.message
        assert error.position == position

    def test_missing_property_lists_available_names(self) -> None:
        """The message for a missing property names the properties that do exist."""
        error = evaluation_error("@triggerBody().address.country")
        assert error.message == "property 'country' doesn't exist; available: 'city', 'zip'"

    def test_no_callback_url(self) -> None:
        """listCallbackUrl() fails when the context has no callback URL."""
        error = evaluation_error("@listCallbackUrl()", FakeContext(url=None))
        assert error.message == "there is no callback URL here"
        assert error.position == 1

    def test_if_evaluates_both_branches(self) -> None:
        """Like Logic Apps, if() evaluates both branches, so a failing unused branch still fails."""
        error = evaluation_error("@if(true, 1, triggerBody().missing)")
        assert "property 'missing' doesn't exist" in error.message


class TestReferences:
    @pytest.mark.parametrize(
        ("value", "functions", "actions"),
        [
            ("plain", set(), set()),
            ("@@body('A')", set(), set()),
            ("@BODY('Create_job')", {"body"}, {"Create_job"}),
            ("@{outputs('A').statusCode} @{body('B')}", {"outputs", "body"}, {"A", "B"}),
            ("@body(concat('A', 'B'))", {"body", "concat"}, set()),
            ("@coalesce(body('A')?['x'], outputs('B'))", {"coalesce", "body", "outputs"}, {"A", "B"}),
            (
                {"url": "@listCallbackUrl()", "items": ["@body('A')", 1, {"at": "@{utcNow()}"}]},
                {"listcallbackurl", "body", "utcnow"},
                {"A"},
            ),
        ],
    )
    def test_functions_and_actions(self, value: Any, functions: set[str], actions: set[str]) -> None:
        """references() lists lower-case function names and literal action names over the whole value."""
        references = compile_value(value).references()
        assert references.functions == frozenset(functions)
        assert references.actions == frozenset(actions)

    def test_union_operator(self) -> None:
        """'|' unites both sets."""
        left = References(frozenset({"body"}), frozenset({"A"}))
        right = References(frozenset({"outputs"}), frozenset({"B"}))
        assert left | right == References(frozenset({"body", "outputs"}), frozenset({"A", "B"}))

    def test_merge(self) -> None:
        """merge() unites any number of references, and nothing gives the empty references."""
        parts = [References(frozenset({"body"}), frozenset({"A"})), References(frozenset({"guid"}), frozenset())]
        assert References.merge(parts) == References(frozenset({"body", "guid"}), frozenset({"A"}))
        assert References.merge([]) == References()


class TestCompileValue:
    def test_nested_structure(self) -> None:
        """Objects and arrays are evaluated recursively; keys are never expressions."""
        value = {
            "@{not an expression}": "@triggerBody()?['age']",
            "list": ["@{triggerBody().name}", 3, None, False, "@@x"],
            "nested": {"url": "@listCallbackUrl()"},
        }
        assert run(value) == {
            "@{not an expression}": 42,
            "list": ["Ann", 3, None, False, "@x"],
            "nested": {"url": "https://hooks.test/callback?sig=abc"},
        }

    @pytest.mark.parametrize(
        ("value", "constant"),
        [
            ({"a": [1, "b", None, {"c": "@@d"}]}, True),
            ({"a": [1, {"c": "@{1}"}]}, False),
            ("@'x'", False),
        ],
    )
    def test_is_constant(self, value: Any, constant: bool) -> None:
        """is_constant is true only when no expression appears anywhere in the value."""
        assert compile_value(value).is_constant is constant

    def test_constant_evaluations_are_fresh(self) -> None:
        """Each evaluation of a constant returns a new object, independent of the source value."""
        source = {"a": [1, 2]}
        compiled = compile_value(source)
        first = compiled.evaluate(FakeContext())
        first["a"].append(3)
        source["a"].append(4)
        assert compiled.evaluate(FakeContext()) == {"a": [1, 2]}

    @pytest.mark.parametrize("value", [{1: "a"}, {"a": {1, 2}}, object()])
    def test_non_json_values_are_rejected(self, value: Any) -> None:
        """Values JSON cannot hold are a TypeError, a bug in the caller rather than the definition."""
        with pytest.raises(TypeError):
            compile_value(value)


class TestFindProblems:
    def test_paths_and_messages(self) -> None:
        """Each failing string is reported once with its JSON path and the message with its position."""
        definition = {
            "actions": {
                "A": {"inputs": {"body": {"x": "@{ foo()}", "ok": "@triggerBody()"}}},
                "Send email": {"inputs": {"to": ["ok", "@concat('a'"]}},
            },
            "it's": "@)",
        }
        assert find_problems(definition, "$") == [
            ("$.actions.A.inputs.body.x", "unknown function 'foo' at position 3"),
            ("$.actions['Send email'].inputs.to[1]", "expected ',' or ')' but found end of expression at position 11"),
            ("$['it\\'s']", "unexpected ')' at position 1"),
        ]

    def test_valid_value_has_no_problems(self) -> None:
        """A value whose strings all compile yields an empty list, including run-time-only failures."""
        assert find_problems({"a": ["@body('Missing')['x']", 1, None, "@@x"]}, "$.inputs") == []

    def test_top_level_string(self) -> None:
        """A bare string is reported at the path given."""
        assert find_problems("@equals(1)", "$.x") == [
            ("$.x", "function 'equals' expects 2 arguments, got 1 at position 1")
        ]


class TestJoinPath:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("actions", "$.actions"),
            (0, "$[0]"),
            ("Send email", "$['Send email']"),
            ("$schema", "$['$schema']"),
            ("", "$['']"),
            ("it's", "$['it\\'s']"),
        ],
    )
    def test_key_forms(self, key: str | int, expected: str) -> None:
        """Identifier keys use dot form, indexes use [n], everything else a quoted bracket."""
        assert join_path("$", key) == expected


class TestRegistry:
    def test_new_function_is_one_registration(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Registering a Function makes it callable, case-insensitively, with arity checked."""
        monkeypatch.setattr(expressions, "_REGISTRY", dict(expressions._REGISTRY))
        register_function(Function("addOne", 1, 1, lambda ctx, args: args[0] + 1))
        assert run("@ADDONE(41)") == 42
        assert "expects 1 argument" in compile_error("@addOne()").message

    def test_duplicate_registration_is_refused(self) -> None:
        """A name already taken, whatever its case, cannot be registered again."""
        with pytest.raises(ValueError, match="already registered"):
            register_function(Function("CONCAT", 0, None, lambda ctx, args: ""))
