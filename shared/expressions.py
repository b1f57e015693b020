"""Workflow Definition Language (WDL) expressions: tokenizer, parser and evaluator.

A subset of the Logic Apps expression language, enough for webhook workflows, with a
function registry so more functions can be added one entry at a time.

How a JSON string in a definition is read:

* ``"@expr"`` is a whole expression; its value keeps its type (object, number, ...).
* a string containing ``@{expr}`` is interpolation; each segment becomes text and the
  result is a string (``"@{triggerBody()?['name']}"`` alone is interpolation too).
* ``"@@text"`` is the literal ``"@text"`` (the whole string, even if ``@{`` follows);
  elsewhere in a string ``@@{`` is a literal ``@{``.
* anything else is a literal.

Expression grammar::

    expression := primary accessor*
    primary    := STRING | NUMBER | 'true' | 'false' | 'null' | NAME '(' [expression (',' expression)*] ')'
    accessor   := '[' expression ']' | '?[' expression ']' | '.' NAME | '?.' NAME
    STRING     := "'" (any character, with '' for a quote)* "'"
    NUMBER     := '-'? digits ('.' digits)? (('e' | 'E') ('+' | '-')? digits)?

Function names are case-insensitive, as in Logic Apps; so are ``true``, ``false`` and
``null`` here. ``?`` makes one access null-safe: a null value, a missing property or an
index out of range yields null instead of an error. Arguments are evaluated before the
call, so ``if()`` evaluates both branches, again as in Logic Apps.

Strings are compiled once (at definition time, so syntax errors, unknown functions and
wrong arity are reported before any run) and evaluated many times. Positions in errors are
0-based offsets into the JSON string as written, leading ``@`` included.
"""

from __future__ import annotations

import json
import math
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from shared.errors import ExpressionError

__all__ = [
    "CompiledValue",
    "EvaluationContext",
    "Function",
    "References",
    "compile_value",
    "evaluate_value",
    "find_problems",
    "join_path",
    "register_function",
]


class EvaluationContext(Protocol):
    """What an expression may read from the run it is evaluated in."""

    def trigger_outputs(self) -> Any:
        """The trigger's outputs: ``{"headers": {...}, "body": ...}``."""
        ...

    def action_outputs(self, name: str) -> Any:
        """An action's outputs; raises ``ExpressionError`` if that action has none yet."""
        ...

    def callback_url(self) -> str:
        """The callback URL of the current action or trigger; raises ``ExpressionError`` when there is none."""
        ...

    def utc_now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class References:
    """What a compiled value depends on, for definition-time checks (ordering, unknown actions)."""

    functions: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()

    def __or__(self, other: References) -> References:
        return References(self.functions | other.functions, self.actions | other.actions)

    @classmethod
    def merge(cls, items: Iterable[References]) -> References:
        functions: set[str] = set()
        actions: set[str] = set()
        for item in items:
            functions |= item.functions
            actions |= item.actions
        return cls(frozenset(functions), frozenset(actions))


_NO_REFERENCES = References()


# --------------------------------------------------------------------------- function registry

Implementation = Callable[[EvaluationContext, Sequence[Any]], Any]


@dataclass(frozen=True)
class Function:
    """One WDL function. ``max_args`` of ``None`` means variadic.

    ``names_action`` marks functions whose first argument names an action (``body('A')``):
    a literal name there is reported in ``References.actions``.
    """

    name: str
    min_args: int
    max_args: int | None
    implementation: Implementation
    names_action: bool = False

    def arity_problem(self, count: int) -> str | None:
        if self.min_args <= count and (self.max_args is None or count <= self.max_args):
            return None
        if self.max_args is None:
            expected = f"at least {_plural(self.min_args, 'argument')}"
        elif self.min_args == self.max_args:
            expected = _plural(self.min_args, "argument")
        else:
            expected = f"{self.min_args} to {self.max_args} arguments"
        return f"function '{self.name}' expects {expected}, got {count}"


_REGISTRY: dict[str, Function] = {}


def register_function(function: Function) -> Function:
    """Add a function; its name is looked up case-insensitively."""
    key = function.name.lower()
    if key in _REGISTRY:
        raise ValueError(f"function {function.name!r} is already registered")
    _REGISTRY[key] = function
    return function


def _builtin(
    name: str, min_args: int, max_args: int | None, *, names_action: bool = False
) -> Callable[[Implementation], Implementation]:
    def decorate(implementation: Implementation) -> Implementation:
        register_function(Function(name, min_args, max_args, implementation, names_action))
        return implementation

    return decorate


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --------------------------------------------------------------------------- value helpers


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _to_text(value: Any) -> str:
    """How a value reads inside interpolation and ``string()``: JSON, except strings and null."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ExpressionError(f"cannot convert a {_type_name(value)} to text: {error}") from error


def _copy_json(value: Any) -> Any:
    # Results must not alias run state or compiled constants: callers mutate what they get.
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value


def _json_equal(left: Any, right: Any) -> bool:
    # Python's == says True == 1; JSON does not.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[key], right[key]) for key in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(_json_equal(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and bool(left == right)


def _describe_key(key: Any) -> str:
    return f"property '{key}'" if isinstance(key, str) else f"index {_to_text(key)}"


def _select(target: Any, key: Any, null_safe: bool, position: int) -> Any:
    if target is None:
        if null_safe:
            return None
        raise ExpressionError(
            f"cannot select {_describe_key(key)} of null; use '?[' to allow a null value", position=position
        )
    if isinstance(target, dict):
        if not isinstance(key, str):
            raise ExpressionError(
                f"cannot select {_describe_key(key)} of an object; property names are strings", position=position
            )
        if key in target:
            return target[key]
        if null_safe:
            return None
        raise ExpressionError(f"property '{key}' doesn't exist{_available(target)}", position=position)
    if isinstance(target, list):
        if isinstance(key, bool) or not isinstance(key, int):
            raise ExpressionError(
                f"cannot select {_describe_key(key)} of an array; use an integer index", position=position
            )
        if 0 <= key < len(target):
            return target[key]
        if null_safe:
            return None
        raise ExpressionError(f"index {key} is out of range for an array of length {len(target)}", position=position)
    raise ExpressionError(f"cannot select {_describe_key(key)} of a {_type_name(target)}", position=position)


def _available(target: dict[str, Any]) -> str:
    names = list(target)
    if not names:
        return "; the object is empty"
    shown = ", ".join(f"'{name}'" for name in names[:10])
    return f"; available: {shown}{', ...' if len(names) > 10 else ''}"


# --------------------------------------------------------------------------- tokenizer


class _Kind(Enum):
    STRING = "string"
    NUMBER = "number"
    NAME = "name"
    LPAREN = "("
    RPAREN = ")"
    LBRACKET = "["
    RBRACKET = "]"
    COMMA = ","
    DOT = "."
    QUESTION = "?"
    RBRACE = "}"
    END = "end"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    position: int
    text: str
    value: Any = None

    def describe(self) -> str:
        if self.kind is _Kind.END:
            return "end of expression"
        if self.kind is _Kind.STRING:
            return f"string {self.text}"
        if self.kind is _Kind.NUMBER:
            return f"number {self.text}"
        return f"'{self.text}'"


_PUNCTUATION = {
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    "[": _Kind.LBRACKET,
    "]": _Kind.RBRACKET,
    ",": _Kind.COMMA,
    ".": _Kind.DOT,
    "?": _Kind.QUESTION,
}


def _is_digit(char: str) -> bool:
    # str.isdigit() accepts superscripts and other scripts' digits; WDL numbers are ASCII.
    return "0" <= char <= "9"


def _is_name_start(char: str) -> bool:
    return char.isascii() and (char.isalpha() or char == "_")


def _is_name_part(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _tokenize(source: str, start: int, opened_at: int | None) -> tuple[list[_Token], int]:
    """Tokens of the expression at ``source[start:]`` and the offset just past it.

    With ``opened_at`` (the offset of ``@{``) the expression ends at the first ``}`` outside
    a string literal; the grammar has no braces, so that ``}`` can only be the closing one.
    """
    tokens: list[_Token] = []
    length = len(source)
    index = start
    while True:
        if index >= length:
            if opened_at is not None:
                raise ExpressionError("'@{' is never closed; expected '}'", position=opened_at)
            tokens.append(_Token(_Kind.END, length, ""))
            return tokens, length
        char = source[index]
        if char.isspace():
            index += 1
        elif char == "}" and opened_at is not None:
            tokens.append(_Token(_Kind.RBRACE, index, char))
            return tokens, index + 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[char], index, char))
            index += 1
        elif char == "'":
            token = _read_string(source, index)
            tokens.append(token)
            index += len(token.text)
        elif _is_digit(char) or (char == "-" and index + 1 < length and _is_digit(source[index + 1])):
            token = _read_number(source, index)
            tokens.append(token)
            index += len(token.text)
        elif _is_name_start(char):
            end = index + 1
            while end < length and _is_name_part(source[end]):
                end += 1
            tokens.append(_Token(_Kind.NAME, index, source[index:end]))
            index = end
        else:
            raise ExpressionError(f"unexpected character '{char}'", position=index)


def _read_string(source: str, start: int) -> _Token:
    pieces: list[str] = []
    index = start + 1
    while True:
        quote = source.find("'", index)
        if quote < 0:
            raise ExpressionError("unterminated string literal", position=start)
        pieces.append(source[index:quote])
        if source.startswith("''", quote):
            pieces.append("'")
            index = quote + 2
        else:
            return _Token(_Kind.STRING, start, source[start : quote + 1], "".join(pieces))


def _skip_digits(source: str, index: int) -> int:
    while index < len(source) and _is_digit(source[index]):
        index += 1
    return index


def _read_number(source: str, start: int) -> _Token:
    length = len(source)
    index = _skip_digits(source, start + 1)
    is_integer = True
    if index + 1 < length and source[index] == "." and _is_digit(source[index + 1]):
        is_integer = False
        index = _skip_digits(source, index + 1)
    if index < length and source[index] in "eE":
        exponent = index + 1
        if exponent < length and source[exponent] in "+-":
            exponent += 1
        if exponent < length and _is_digit(source[exponent]):
            is_integer = False
            index = _skip_digits(source, exponent)
    if index < length and _is_name_part(source[index]):
        end = index
        while end < length and _is_name_part(source[end]):
            end += 1
        raise ExpressionError(f"invalid number '{source[start:end]}'", position=start)
    text = source[start:index]
    value: int | float = int(text) if is_integer else float(text)
    if isinstance(value, float) and math.isinf(value):
        raise ExpressionError(f"number '{text}' is out of range", position=start)
    return _Token(_Kind.NUMBER, start, text, value)


# --------------------------------------------------------------------------- syntax tree


class _Node(ABC):
    __slots__ = ()

    @abstractmethod
    def evaluate(self, context: EvaluationContext) -> Any: ...

    @abstractmethod
    def collect(self, functions: set[str], actions: set[str]) -> None: ...


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value: str | int | float | bool | None) -> None:
        self.value = value

    def evaluate(self, context: EvaluationContext) -> Any:
        return self.value

    def collect(self, functions: set[str], actions: set[str]) -> None:
        return None


class _Call(_Node):
    __slots__ = ("arguments", "function", "position")

    def __init__(self, function: Function, arguments: tuple[_Node, ...], position: int) -> None:
        self.function = function
        self.arguments = arguments
        self.position = position

    def evaluate(self, context: EvaluationContext) -> Any:
        # Eager, as in Logic Apps: if() evaluates both branches.
        values = [argument.evaluate(context) for argument in self.arguments]
        try:
            return self.function.implementation(context, values)
        except ExpressionError as error:
            if error.position is not None:
                raise
            raise ExpressionError(error.message, position=self.position) from error

    def collect(self, functions: set[str], actions: set[str]) -> None:
        functions.add(self.function.name.lower())
        if self.function.names_action and self.arguments:
            first = self.arguments[0]
            if isinstance(first, _Literal) and isinstance(first.value, str):
                actions.add(first.value)
        for argument in self.arguments:
            argument.collect(functions, actions)


class _Access(_Node):
    __slots__ = ("key", "null_safe", "position", "target")

    def __init__(self, target: _Node, key: _Node, null_safe: bool, position: int) -> None:
        self.target = target
        self.key = key
        self.null_safe = null_safe
        self.position = position

    def evaluate(self, context: EvaluationContext) -> Any:
        return _select(self.target.evaluate(context), self.key.evaluate(context), self.null_safe, self.position)

    def collect(self, functions: set[str], actions: set[str]) -> None:
        self.target.collect(functions, actions)
        self.key.collect(functions, actions)


_KEYWORDS: dict[str, bool | None] = {"true": True, "false": False, "null": None}

# Deep enough for any hand-written expression, shallow enough to stay far from Python's recursion limit.
_MAX_DEPTH = 100


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    def parse(self) -> _Node:
        if self._peek().kind in (_Kind.END, _Kind.RBRACE):
            raise ExpressionError("empty expression", position=self._peek().position)
        node = self._expression()
        last = self._peek()
        if last.kind not in (_Kind.END, _Kind.RBRACE):
            raise ExpressionError(
                f"unexpected {last.describe()} after the end of the expression", position=last.position
            )
        return node

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind not in (_Kind.END, _Kind.RBRACE):
            self._index += 1
        return token

    def _expect(self, kind: _Kind, what: str) -> _Token:
        token = self._advance()
        if token.kind is not kind:
            raise ExpressionError(f"expected {what} but found {token.describe()}", position=token.position)
        return token

    def _expression(self) -> _Node:
        # Accessors count as levels too: a long a[0][0]... chain nests as deeply when evaluated.
        entry_depth = self._depth
        self._descend()
        node = self._primary()
        while True:
            token = self._peek()
            if token.kind in (_Kind.QUESTION, _Kind.LBRACKET, _Kind.DOT):
                self._descend()
            if token.kind is _Kind.QUESTION:
                self._advance()
                accessor = self._advance()
                if accessor.kind not in (_Kind.LBRACKET, _Kind.DOT):
                    raise ExpressionError(
                        f"expected '[' or '.' after '?' but found {accessor.describe()}", position=accessor.position
                    )
                node = self._accessor(node, accessor, null_safe=True, position=token.position)
            elif token.kind in (_Kind.LBRACKET, _Kind.DOT):
                node = self._accessor(node, self._advance(), null_safe=False, position=token.position)
            else:
                break
        self._depth = entry_depth
        return node

    def _descend(self) -> None:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {_MAX_DEPTH} levels", position=self._peek().position)

    def _accessor(self, target: _Node, opener: _Token, *, null_safe: bool, position: int) -> _Node:
        if opener.kind is _Kind.DOT:
            name = self._expect(_Kind.NAME, "a property name after '.'")
            return _Access(target, _Literal(name.text), null_safe, position)
        key = self._expression()
        self._expect(_Kind.RBRACKET, "']'")
        return _Access(target, key, null_safe, position)

    def _primary(self) -> _Node:
        token = self._advance()
        if token.kind in (_Kind.STRING, _Kind.NUMBER):
            return _Literal(token.value)
        if token.kind is not _Kind.NAME:
            raise ExpressionError(f"unexpected {token.describe()}", position=token.position)
        lowered = token.text.lower()
        if lowered in _KEYWORDS:
            return _Literal(_KEYWORDS[lowered])
        if self._peek().kind is not _Kind.LPAREN:
            raise ExpressionError(
                f"expected '(' after '{token.text}' but found {self._peek().describe()}", position=self._peek().position
            )
        function = _REGISTRY.get(lowered)
        if function is None:
            raise ExpressionError(f"unknown function '{token.text}'", position=token.position)
        self._advance()
        arguments: list[_Node] = []
        if self._peek().kind is _Kind.RPAREN:
            self._advance()
        else:
            while True:
                arguments.append(self._expression())
                separator = self._advance()
                if separator.kind is _Kind.RPAREN:
                    break
                if separator.kind is not _Kind.COMMA:
                    raise ExpressionError(
                        f"expected ',' or ')' but found {separator.describe()}", position=separator.position
                    )
        problem = function.arity_problem(len(arguments))
        if problem is not None:
            raise ExpressionError(problem, position=token.position)
        return _Call(function, tuple(arguments), token.position)


def _parse(source: str, start: int, opened_at: int | None) -> tuple[_Node, int]:
    tokens, end = _tokenize(source, start, opened_at)
    return _Parser(tokens).parse(), end


# --------------------------------------------------------------------------- compiled values


class CompiledValue(ABC):
    """A JSON value whose strings have been classified and parsed; evaluate it many times."""

    __slots__ = ()

    @abstractmethod
    def evaluate(self, ctx: EvaluationContext) -> Any:
        """The value with every expression evaluated; a fresh JSON value the caller may mutate."""

    def references(self) -> References:
        """Functions and literal action names used anywhere in the value."""
        return _NO_REFERENCES

    @property
    def is_constant(self) -> bool:
        """True when the value holds no expression, so evaluating it needs no context."""
        return False


class _Constant(CompiledValue):
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def evaluate(self, ctx: EvaluationContext) -> Any:
        return _copy_json(self.value)

    @property
    def is_constant(self) -> bool:
        return True


def _references_of(nodes: Iterable[_Node]) -> References:
    functions: set[str] = set()
    actions: set[str] = set()
    for node in nodes:
        node.collect(functions, actions)
    return References(frozenset(functions), frozenset(actions))


class _WholeExpression(CompiledValue):
    __slots__ = ("_node", "_references")

    def __init__(self, node: _Node) -> None:
        self._node = node
        self._references = _references_of([node])

    def evaluate(self, ctx: EvaluationContext) -> Any:
        return _copy_json(self._node.evaluate(ctx))

    def references(self) -> References:
        return self._references


class _Interpolation(CompiledValue):
    __slots__ = ("_parts", "_references")

    def __init__(self, parts: tuple[str | _Node, ...]) -> None:
        self._parts = parts
        self._references = _references_of(part for part in parts if isinstance(part, _Node))

    def evaluate(self, ctx: EvaluationContext) -> str:
        return "".join(part if isinstance(part, str) else _to_text(part.evaluate(ctx)) for part in self._parts)

    def references(self) -> References:
        return self._references


class _Object(CompiledValue):
    __slots__ = ("_items", "_references")

    def __init__(self, items: dict[str, CompiledValue]) -> None:
        self._items = items
        self._references = References.merge(item.references() for item in items.values())

    def evaluate(self, ctx: EvaluationContext) -> dict[str, Any]:
        return {key: item.evaluate(ctx) for key, item in self._items.items()}

    def references(self) -> References:
        return self._references


class _Array(CompiledValue):
    __slots__ = ("_items", "_references")

    def __init__(self, items: list[CompiledValue]) -> None:
        self._items = items
        self._references = References.merge(item.references() for item in items)

    def evaluate(self, ctx: EvaluationContext) -> list[Any]:
        return [item.evaluate(ctx) for item in self._items]

    def references(self) -> References:
        return self._references


def _compile_string(text: str) -> CompiledValue:
    if text.startswith("@@"):
        return _Constant(text[1:])
    if text.startswith("@") and not text.startswith("@{"):
        node, _ = _parse(text, 1, None)
        return _WholeExpression(node)
    if "@{" not in text:
        return _Constant(text)
    return _compile_interpolation(text)


def _compile_interpolation(text: str) -> CompiledValue:
    parts: list[str | _Node] = []
    literal: list[str] = []
    index = 0
    while True:
        at = text.find("@", index)
        if at < 0:
            literal.append(text[index:])
            break
        literal.append(text[index:at])
        if text.startswith("@@{", at):
            literal.append("@{")
            index = at + 3
        elif text.startswith("@{", at):
            if literal:
                parts.append("".join(literal))
                literal = []
            node, index = _parse(text, at + 2, at)
            parts.append(node)
        else:
            literal.append("@")
            index = at + 1
    tail = "".join(literal)
    if tail:
        parts.append(tail)
    if not any(isinstance(part, _Node) for part in parts):
        return _Constant("".join(part for part in parts if isinstance(part, str)))
    return _Interpolation(tuple(parts))


def compile_value(value: Any) -> CompiledValue:
    """Compile a JSON value recursively: every string is classified and parsed once.

    Raises ``ExpressionError`` for syntax errors, unknown functions and wrong arity, and
    ``TypeError`` for values JSON cannot hold.
    """
    if isinstance(value, str):
        return _compile_string(value)
    if value is None or isinstance(value, bool | int | float):
        return _Constant(value)
    if isinstance(value, dict):
        items: dict[str, CompiledValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            items[key] = compile_value(item)
        if all(isinstance(item, _Constant) for item in items.values()):
            return _Constant({key: item.value for key, item in items.items() if isinstance(item, _Constant)})
        return _Object(items)
    if isinstance(value, list):
        elements = [compile_value(item) for item in value]
        if all(isinstance(item, _Constant) for item in elements):
            return _Constant([item.value for item in elements if isinstance(item, _Constant)])
        return _Array(elements)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def evaluate_value(value: Any, ctx: EvaluationContext) -> Any:
    """Compile and evaluate in one step, for values used once."""
    return compile_value(value).evaluate(ctx)


# --------------------------------------------------------------------------- definition-time checks


def join_path(path: str, key: str | int) -> str:
    """Extend a JSON path: ``$.a`` + ``b`` is ``$.a.b``, + ``0`` is ``$.a[0]``, + ``x y`` is ``$.a['x y']``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key and _is_name_start(key[0]) and all(_is_name_part(char) for char in key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{path}['{escaped}']"


def _problem_message(error: ExpressionError) -> str:
    if error.position is None:
        return error.message
    return f"{error.message} at position {error.position}"


def find_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """Every string under ``value`` that does not compile, as ``(json_path, message)`` pairs."""
    problems: list[tuple[str, str]] = []
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        current, current_path = pending.pop()
        if isinstance(current, str):
            try:
                _compile_string(current)
            except ExpressionError as error:
                problems.append((current_path, _problem_message(error)))
        elif isinstance(current, dict):
            pending.extend((item, join_path(current_path, key)) for key, item in reversed(current.items()))
        elif isinstance(current, list):
            pending.extend((item, join_path(current_path, index)) for index, item in reversed(list(enumerate(current))))
    return problems


# --------------------------------------------------------------------------- built-in functions


def _expect_type(function: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # No caller asks for int, so bool being an int subclass cannot slip through here.
    if not isinstance(value, kind):
        raise ExpressionError(f"{function}() expects {what}, got {_type_name(value)}")
    return value


def _outputs_part(outputs: Any, part: str, owner: str) -> Any:
    if outputs is None:
        return None
    if not isinstance(outputs, dict):
        raise ExpressionError(f"the outputs of {owner} are a {_type_name(outputs)}, not an object")
    return outputs.get(part)


@_builtin("listCallbackUrl", 0, 0)
def _list_callback_url(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return context.callback_url()


@_builtin("triggerOutputs", 0, 0)
def _trigger_outputs(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return context.trigger_outputs()


@_builtin("triggerBody", 0, 0)
def _trigger_body(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return _outputs_part(context.trigger_outputs(), "body", "the trigger")


@_builtin("outputs", 1, 1, names_action=True)
def _outputs(context: EvaluationContext, args: Sequence[Any]) -> Any:
    name = _expect_type("outputs", args[0], str, "an action name")
    return context.action_outputs(name)


@_builtin("body", 1, 1, names_action=True)
def _body(context: EvaluationContext, args: Sequence[Any]) -> Any:
    name = _expect_type("body", args[0], str, "an action name")
    return _outputs_part(context.action_outputs(name), "body", f"action '{name}'")


@_builtin("concat", 1, None)
def _concat(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return "".join(_to_text(arg) for arg in args)


@_builtin("string", 1, 1)
def _string(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return _to_text(args[0])


@_builtin("int", 1, 1)
def _int(context: EvaluationContext, args: Sequence[Any]) -> Any:
    value = args[0]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        # int() alone would also accept '1_000' and non-ASCII digits.
        if digits and all(_is_digit(char) for char in digits):
            return int(text)
    raise ExpressionError(f"int() cannot convert {_to_text(value)!r} ({_type_name(value)}) to an integer")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


@_builtin("json", 1, 1)
def _json(context: EvaluationContext, args: Sequence[Any]) -> Any:
    text = _expect_type("json", args[0], str, "a string of JSON text")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise ExpressionError(f"json() could not parse its argument: {error.msg} at character {error.pos}") from error
    except ValueError as error:
        raise ExpressionError(f"json() could not parse its argument: {error}") from error


@_builtin("coalesce", 1, None)
def _coalesce(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return next((arg for arg in args if arg is not None), None)


@_builtin("equals", 2, 2)
def _equals(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return _json_equal(args[0], args[1])


@_builtin("not", 1, 1)
def _not(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return not _expect_type("not", args[0], bool, "a boolean")


def _booleans(function: str, args: Sequence[Any]) -> list[bool]:
    # Every argument is checked, not only those before the first deciding one: a type error is
    # a bug in the definition whatever the other values are.
    return [_expect_type(function, arg, bool, "booleans") for arg in args]


@_builtin("and", 1, None)
def _and(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return all(_booleans("and", args))


@_builtin("or", 1, None)
def _or(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return any(_booleans("or", args))


@_builtin("if", 3, 3)
def _if(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return args[1] if _expect_type("if", args[0], bool, "a boolean condition") else args[2]


@_builtin("toLower", 1, 1)
def _to_lower(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return _expect_type("toLower", args[0], str, "a string").lower()


@_builtin("toUpper", 1, 1)
def _to_upper(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return _expect_type("toUpper", args[0], str, "a string").upper()


@_builtin("length", 1, 1)
def _length(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return len(_expect_type("length", args[0], (str, list), "a string or an array"))


@_builtin("guid", 0, 0)
def _guid(context: EvaluationContext, args: Sequence[Any]) -> Any:
    return str(uuid.uuid4())


@_builtin("utcNow", 0, 0)
def _utc_now(context: EvaluationContext, args: Sequence[Any]) -> Any:
    now = context.utc_now()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ExpressionError("utcNow() needs a timezone-aware clock; got a naive datetime")
    now = now.astimezone(UTC)
    # Logic Apps' default is .NET's round-trip format: seven fractional digits, then Z.
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond:06d}0Z"
