"""Workflow definitions: what ``parse_workflow_put`` accepts, and how it reports every problem."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import DefinitionInvalid
from shared.models import HttpAction, HttpWebhookAction, RequestTrigger, WorkflowState, parse_workflow_put
from tests.unit.builders import definition, http_action, put_body, request_trigger, webhook_action

A = "$.definition.actions.A"


def problems(body: Any) -> list[dict[str, str]]:
    """The ``details`` of the ``DefinitionInvalid`` that ``body`` is refused with."""
    with pytest.raises(DefinitionInvalid) as caught:
        parse_workflow_put(body)
    assert caught.value.status == 400
    assert caught.value.code == "InvalidDefinition"
    assert caught.value.details, "a refusal always says what is wrong"
    return caught.value.details


def paths(body: Any) -> list[str]:
    return [p["path"] for p in problems(body)]


def only_problem(body: Any) -> dict[str, str]:
    found = problems(body)
    assert len(found) == 1, found
    return found[0]


class TestAccepted:
    def test_webhook_then_http_definition_is_accepted(self) -> None:
        """A definition with a trigger, a webhook action and an HTTP action after it is saved as written."""
        body = put_body(
            definition(
                {
                    "Wait": webhook_action(),
                    "Notify": http_action(
                        method="POST", body="@body('Wait')", run_after={"Wait": ["Succeeded", "TimedOut"]}
                    ),
                }
            )
        )

        put = parse_workflow_put(body)

        assert put.state == WorkflowState.ENABLED
        assert isinstance(put.definition.triggers["manual"], RequestTrigger)
        assert isinstance(put.definition.actions["Wait"], HttpWebhookAction)
        notify = put.definition.actions["Notify"]
        assert isinstance(notify, HttpAction)
        assert notify.run_after == {"Wait": ["Succeeded", "TimedOut"]}

    def test_keywords_are_case_insensitive(self) -> None:
        """``type``, ``runAfter`` statuses, ``state`` and the method may be written in any case."""
        body = put_body(
            definition(
                {
                    "First": http_action(type_="http", method="post"),
                    "Second": webhook_action(type_="HTTPWEBHOOK", run_after={"First": ["failed", "SKIPPED"]}),
                },
                triggers={"manual": request_trigger(type="request")},
            ),
            state="disabled",
        )

        put = parse_workflow_put(body)

        assert put.state == WorkflowState.DISABLED
        first, second = put.definition.actions["First"], put.definition.actions["Second"]
        assert (first.type, second.type) == ("Http", "HttpWebhook")
        assert isinstance(first, HttpAction)
        assert first.inputs.method == "POST"
        assert second.run_after == {"First": ["Failed", "Skipped"]}
        assert put.definition.triggers["manual"].type == "Request"

    def test_unsubscribe_with_url_instead_of_uri_is_accepted(self) -> None:
        """An unsubscribe written the older way, with ``url``, is taken as its ``uri``."""
        body = put_body(
            definition({"A": webhook_action(unsubscribe={"method": "DELETE", "url": "https://target.example/subs/1"})})
        )

        action = parse_workflow_put(body).definition.actions["A"]

        assert isinstance(action, HttpWebhookAction)
        assert action.inputs.unsubscribe is not None
        assert action.inputs.unsubscribe.uri == "https://target.example/subs/1"
        assert action.inputs.unsubscribe.method == "DELETE"

    def test_list_callback_url_in_unsubscribe_is_accepted(self) -> None:
        """A webhook may hand its callback URL to unsubscribe too, to unsubscribe by URL."""
        body = put_body(
            definition(
                {
                    "A": webhook_action(
                        unsubscribe={"method": "POST", "uri": "https://t.example/u", "body": "@listCallbackUrl()"}
                    )
                }
            )
        )

        assert "A" in parse_workflow_put(body).definition.actions

    def test_reference_to_an_earlier_action_is_accepted(self) -> None:
        """An expression may read an action that runs before it, even indirectly."""
        body = put_body(
            definition(
                {
                    "A": http_action(),
                    "B": http_action(run_after={"A": ["Succeeded"]}),
                    "C": http_action(uri="@{body('A')?['next']}", run_after={"B": ["Succeeded"]}),
                }
            )
        )

        assert list(parse_workflow_put(body).definition.actions) == ["A", "B", "C"]


class TestRefusedShape:
    def test_body_that_is_not_an_object(self) -> None:
        """A body that is not a JSON object is refused at the root."""
        assert only_problem(["not", "an", "object"])["path"] == "$"

    def test_missing_triggers(self) -> None:
        """A definition without ``triggers`` is refused at that path."""
        body = put_body(definition())
        del body["definition"]["triggers"]

        problem = only_problem(body)

        assert problem["path"] == "$.definition.triggers"
        assert "required" in problem["message"].lower()

    def test_empty_triggers(self) -> None:
        """A definition with no trigger says it needs exactly one."""
        problem = only_problem(put_body(definition(triggers={})))

        assert problem == {"path": "$.definition.triggers", "message": problem["message"]}
        assert "exactly one trigger" in problem["message"]
        assert "found 0" in problem["message"]

    def test_two_triggers(self) -> None:
        """A definition with two triggers says it needs exactly one."""
        problem = only_problem(put_body(definition(triggers={"one": request_trigger(), "two": request_trigger()})))

        assert problem["path"] == "$.definition.triggers"
        assert "found 2" in problem["message"]

    def test_unknown_action_type(self) -> None:
        """An action type Hookflow does not implement is refused, naming the supported ones."""
        problem = only_problem(put_body(definition({"A": http_action(type_="Compose")})))

        assert problem["path"] == f"{A}.type"
        assert "'Compose'" in problem["message"]
        assert "Http" in problem["message"]
        assert "HttpWebhook" in problem["message"]

    def test_unknown_property(self) -> None:
        """A property Hookflow does not know is refused at its own path rather than ignored."""
        problem = only_problem(put_body(definition({"A": http_action(retryCount=3)})))

        assert problem == {"path": f"{A}.retryCount", "message": "unknown or unsupported property"}

    def test_unknown_property_inside_inputs(self) -> None:
        """An unknown key deep in the inputs is reported at its full path."""
        body = put_body(definition({"A": webhook_action()}))
        body["definition"]["actions"]["A"]["inputs"]["subscribe"]["timeout"] = "PT1M"

        assert paths(body) == [f"{A}.inputs.subscribe.timeout"]

    def test_bad_http_method(self) -> None:
        """A method that is not an HTTP method is refused at ``inputs.method``."""
        problem = only_problem(put_body(definition({"A": http_action(method="FETCH")})))

        assert problem["path"] == f"{A}.inputs.method"
        assert "FETCH" in problem["message"]

    def test_bad_run_after_status(self) -> None:
        """A runAfter status that does not exist is refused at its index."""
        body = put_body(definition({"A": http_action(), "B": http_action(run_after={"A": ["Done"]})}))

        assert paths(body) == ["$.definition.actions.B.runAfter.A[0]"]

    def test_unsubscribe_without_address(self) -> None:
        """An unsubscribe with neither ``uri`` nor ``url`` is refused."""
        problem = only_problem(put_body(definition({"A": webhook_action(unsubscribe={"method": "DELETE"})})))

        assert problem["path"] == f"{A}.inputs.unsubscribe"
        assert "uri" in problem["message"]

    def test_every_shape_problem_is_listed(self) -> None:
        """Several shape problems in one definition are all reported in one answer."""
        body = put_body(
            definition(
                {"A": http_action(retryCount=3), "B": http_action(method="FETCH"), "C": http_action(type_="Compose")}
            )
        )

        assert sorted(paths(body)) == [
            f"{A}.retryCount",
            "$.definition.actions.B.inputs.method",
            "$.definition.actions.C.type",
        ]


class TestRefusedGraph:
    def test_run_after_unknown_action(self) -> None:
        """runAfter naming an action that does not exist is refused at that key."""
        problem = only_problem(put_body(definition({"A": http_action(run_after={"Nope": ["Succeeded"]})})))

        assert problem["path"] == f"{A}.runAfter.Nope"
        assert "'Nope'" in problem["message"]

    def test_run_after_itself(self) -> None:
        """An action that runs after itself is refused."""
        problems_found = problems(put_body(definition({"A": http_action(run_after={"A": ["Succeeded"]})})))

        assert f"{A}.runAfter.A" in [p["path"] for p in problems_found]

    def test_run_after_cycle(self) -> None:
        """A runAfter cycle is refused and the message shows the loop."""
        body = put_body(
            definition(
                {
                    "A": http_action(run_after={"C": ["Succeeded"]}),
                    "B": http_action(run_after={"A": ["Succeeded"]}),
                    "C": http_action(run_after={"B": ["Succeeded"]}),
                }
            )
        )

        problem = only_problem(body)

        assert problem["path"] == "$.definition.actions"
        assert "cycle" in problem["message"]
        assert all(name in problem["message"] for name in "ABC")


class TestRefusedExpressions:
    def test_unknown_function(self) -> None:
        """An expression calling a function that does not exist is refused at the string holding it."""
        problem = only_problem(put_body(definition({"A": webhook_action(subscribe_uri="@{nope()}/x")})))

        assert problem["path"] == f"{A}.inputs.subscribe.uri"
        assert "nope" in problem["message"]

    def test_syntax_error_in_a_header(self) -> None:
        """A malformed expression in a header is refused at that header."""
        body = put_body(definition({"A": http_action(headers={"X-Id": "@concat('a'"})}))

        assert paths(body) == [f"{A}.inputs.headers['X-Id']"]

    def test_reference_to_a_missing_action(self) -> None:
        """``body('Nope')`` is refused at the string that holds it."""
        problem = only_problem(put_body(definition({"A": webhook_action(subscribe_uri="@{body('Nope')}")})))

        assert "'Nope'" in problem["message"]
        assert problem["path"] == f"{A}.inputs.subscribe.uri"

    def test_reference_to_an_action_that_does_not_run_before(self) -> None:
        """Reading the outputs of an action that is not an ancestor is refused, with a hint to add runAfter."""
        body = put_body(definition({"A": http_action(body={"x": "@body('B')"}), "B": http_action()}))

        problem = only_problem(body)

        assert "runAfter" in problem["message"]
        assert problem["path"] == f"{A}.inputs.body.x"

    def test_reference_to_a_parallel_branch(self) -> None:
        """A sibling branch does not run before, even when both follow the same action."""
        body = put_body(
            definition(
                {
                    "Start": http_action(),
                    "Left": http_action(run_after={"Start": ["Succeeded"]}),
                    "Right": http_action(uri="@{body('Left')}", run_after={"Start": ["Succeeded"]}),
                }
            )
        )

        problem = only_problem(body)

        assert "'Left'" in problem["message"]
        assert problem["path"].startswith("$.definition.actions.Right.inputs")

    def test_list_callback_url_in_an_http_action(self) -> None:
        """``listCallbackUrl()`` outside an HttpWebhook is refused at the string that uses it."""
        problem = only_problem(put_body(definition({"A": http_action(body={"cb": "@listCallbackUrl()"})})))

        assert "listCallbackUrl" in problem["message"]
        assert problem["path"] == f"{A}.inputs.body.cb"


class TestEveryProblemListed:
    def test_problems_of_one_pass_are_all_listed(self) -> None:
        """Trigger count, runAfter, unknown function and reference problems come back together."""
        body = put_body(
            definition(
                {
                    "A": http_action(uri="@nope()"),
                    "B": http_action(run_after={"Nope": ["Succeeded"]}),
                    "C": http_action(body="@body('X')"),
                },
                triggers={},
            )
        )

        found = paths(body)

        assert len(found) == 4, found
        assert {"$.definition.triggers", "$.definition.actions.B.runAfter.Nope", f"{A}.inputs.uri"} <= set(found)
        assert any(path.startswith("$.definition.actions.C.inputs") for path in found)

    def test_cycle_does_not_hide_expression_problems(self) -> None:
        """An unknown function elsewhere is still reported when the runAfter graph has a cycle."""
        body = put_body(
            definition(
                {
                    "A": http_action(run_after={"B": ["Succeeded"]}),
                    "B": http_action(run_after={"A": ["Succeeded"]}),
                    "C": http_action(uri="@nope()"),
                }
            )
        )

        assert sorted(paths(body)) == ["$.definition.actions", "$.definition.actions.C.inputs.uri"]

    def test_shape_problem_does_not_hide_reference_problems(self) -> None:
        """An unknown property and a runAfter naming an unknown action are reported in the same answer."""
        body = put_body(
            definition({"A": http_action(retryCount=3), "B": http_action(run_after={"Nope": ["Succeeded"]})})
        )

        assert sorted(paths(body)) == [f"{A}.retryCount", "$.definition.actions.B.runAfter.Nope"]

    def test_refusal_serialises_every_problem(self) -> None:
        """The 400 body carries the code and one detail per problem."""
        body = put_body(definition({"A": http_action(method="FETCH"), "B": http_action(method="BREW")}))

        with pytest.raises(DefinitionInvalid) as caught:
            parse_workflow_put(body)

        error = caught.value.to_json()["error"]
        assert error["code"] == "InvalidDefinition"
        assert [d["path"] for d in error["details"]] == [f"{A}.inputs.method", "$.definition.actions.B.inputs.method"]
