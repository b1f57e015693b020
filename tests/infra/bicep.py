"""Read Bicep without the Bicep CLI: a small model of a template built on tree-sitter-bicep.

The Bicep CLI (and its network-hungry restore) is not available where the tests run, so the
template is checked from its syntax tree. This module knows just enough Bicep for that:

* :class:`BicepFile` lists a file's parameters (with defaults and decorators such as
  ``@secure()``), variables, modules (path and the keys of the ``params`` object passed),
  resources (type and API version, child resources included), outputs and syntax errors;
* :class:`BicepProject` loads every file under ``infra/``, follows module calls between them and
  answers the questions the tests ask: which modules are wired wrongly, which keys an object
  expression (``union(appSettings, {...})``) can have, which parameters a value flows from, and
  which role definition ids the role assignments grant.

Anything it does not understand raises :class:`BicepError` instead of being skipped, so a check
built on it fails loudly rather than passing on an empty answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TypeAlias

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
ROLE_ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
_RESOURCE_ID_FUNCTIONS = ("subscriptionResourceId", "resourceId", "tenantResourceId")

# Module references that need a registry (and the network) to resolve; the template must not use them.
_REGISTRY_PREFIXES = ("br:", "br/", "ts:", "ts/")
# A whole value taken from the azd environment, with no literal default after it.
_AZD_PLACEHOLDER = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")

BicepLiteral: TypeAlias = str | int | bool | list["BicepLiteral"] | dict[str, "BicepLiteral"] | None


class BicepError(Exception):
    """Something in a template this reader cannot interpret (it never guesses)."""


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def _text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def _line(node: Node) -> int:
    return node.start_point.row + 1


def _string_value(node: Node) -> str | None:
    """The value of a plain string literal; ``None`` for anything else (interpolations included)."""
    if node.type != "string":
        return None
    if any(child.type == "interpolation" for child in node.named_children):
        return None
    return "".join(_text(child) for child in node.named_children if child.type in ("string_content", "escape_sequence"))


@dataclass(frozen=True)
class Param:
    """A ``param`` declaration: name, type, default and decorators (``secure``, ``metadata``, ...)."""

    name: str
    type: str
    default: Node | None
    decorators: dict[str, list[Node]]
    line: int

    @property
    def has_default(self) -> bool:
        return self.default is not None

    @property
    def required(self) -> bool:
        # A nullable type (`string?`) may be left out like a parameter with a default.
        return self.default is None and not self.type.endswith("?")

    @property
    def secure(self) -> bool:
        return "secure" in self.decorators


@dataclass(frozen=True)
class Module:
    """A ``module`` declaration: its path and the keys of the ``params`` object it passes."""

    symbol: str
    path: str
    params: dict[str, Node]
    line: int

    @property
    def from_registry(self) -> bool:
        return self.path.startswith(_REGISTRY_PREFIXES)


@dataclass(frozen=True)
class Resource:
    """A ``resource`` declaration (nested child resources get their full type)."""

    symbol: str
    type: str
    api_version: str
    existing: bool
    body: Node
    line: int


@dataclass(frozen=True)
class RoleAssignment:
    """A role assignment: which role (definition GUID) it grants, and on what."""

    file: Path
    symbol: str
    role_definition_id: str
    scope_type: str | None
    principal_type: str | None
    line: int


@dataclass(eq=False)
class BicepFile:
    """One parsed ``.bicep`` file."""

    path: Path
    source: str
    root: Node = field(init=False)

    def __post_init__(self) -> None:
        self.root = _parser().parse(self.source.encode("utf-8")).root_node

    @classmethod
    def load(cls, path: Path) -> BicepFile:
        return cls(path, path.read_text(encoding="utf-8"))

    def where(self, node: Node) -> str:
        """``file:line`` of a node, for messages."""
        return f"{self.path.name}:{_line(node)}"

    # -- syntax -------------------------------------------------------------------------------

    def syntax_errors(self) -> list[str]:
        """Every ERROR or MISSING node, as ``file:line:column: what``."""
        problems: list[str] = []

        def visit(node: Node) -> None:
            if node.is_error or node.is_missing:
                what = f"missing {node.type}" if node.is_missing else f"cannot parse {_text(node)[:40]!r}"
                problems.append(f"{self.path.name}:{_line(node)}:{node.start_point.column + 1}: {what}")
                return
            for child in node.children:
                visit(child)

        visit(self.root)
        return problems

    # -- declarations -------------------------------------------------------------------------

    def _declarations(self, kind: str) -> Iterator[tuple[Node, dict[str, list[Node]]]]:
        """Top-level declarations of one kind, each with the decorators written just above it."""
        pending: dict[str, list[Node]] = {}
        for node in self.root.named_children:
            if node.type == "decorators":
                pending = {}
                for decorator in node.named_children:
                    call = next((c for c in decorator.named_children if c.type == "call_expression"), None)
                    if call is None:
                        continue
                    function = call.child_by_field_name("function")
                    arguments = call.child_by_field_name("arguments")
                    if function is not None:
                        pending[_text(function).split(".")[-1]] = arguments.named_children if arguments else []
                continue
            if node.type in ("comment", "diagnostic_comment"):
                continue
            if node.type == kind:
                yield node, pending
            pending = {}

    @property
    def target_scope(self) -> str:
        for node in self.root.named_children:
            if node.type == "target_scope_assignment":
                value = _string_value(node.named_children[0])
                if value is None:
                    raise BicepError(f"{self.where(node)}: targetScope is not a plain string")
                return value
        return "resourceGroup"

    @cached_property
    def params(self) -> dict[str, Param]:
        found: dict[str, Param] = {}
        for node, decorators in self._declarations("parameter_declaration"):
            name, type_node, *rest = node.named_children
            found[_text(name)] = Param(
                name=_text(name),
                type=_text(type_node),
                default=rest[-1] if rest else None,
                decorators=decorators,
                line=_line(node),
            )
        return found

    @cached_property
    def variables(self) -> dict[str, Node]:
        found: dict[str, Node] = {}
        for node, _ in self._declarations("variable_declaration"):
            name, *rest = node.named_children
            found[_text(name)] = rest[-1]
        return found

    @cached_property
    def outputs(self) -> dict[str, Node]:
        found: dict[str, Node] = {}
        for node, _ in self._declarations("output_declaration"):
            name, *rest = node.named_children
            found[_text(name)] = rest[-1]
        return found

    @cached_property
    def modules(self) -> list[Module]:
        found: list[Module] = []
        for node, _ in self._declarations("module_declaration"):
            symbol, path_node, value = node.named_children[:3]
            path = _string_value(path_node)
            if path is None:
                raise BicepError(f"{self.where(node)}: module path is not a plain string")
            body = _declaration_body(value)
            if body is None:
                raise BicepError(f"{self.where(node)}: module {_text(symbol)} has no object body")
            params_node = property_node(body, "params")
            params: dict[str, Node] = {}
            if params_node is not None:
                if params_node.type != "object":
                    raise BicepError(f"{self.where(params_node)}: params of module {_text(symbol)} is not an object")
                params = dict(_object_properties(self, params_node))
            found.append(Module(_text(symbol), path, params, _line(node)))
        return found

    @cached_property
    def resources(self) -> list[Resource]:
        found: list[Resource] = []
        for node, _ in self._declarations("resource_declaration"):
            found.extend(self._resource(node, parent=None))
        return found

    def _resource(self, node: Node, parent: Resource | None) -> list[Resource]:
        symbol, type_node = node.named_children[:2]
        declared = _string_value(type_node)
        if declared is None:
            raise BicepError(f"{self.where(node)}: resource type is not a plain string")
        type_name, _, api_version = declared.partition("@")
        if parent is not None and "." not in type_name:
            # A nested child declared by its last segment ('config') takes the parent's type and version.
            type_name = f"{parent.type}/{type_name}"
            api_version = api_version or parent.api_version
        body = _declaration_body(node.named_children[-1])
        if body is None:
            raise BicepError(f"{self.where(node)}: resource {_text(symbol)} has no object body")
        existing = any(not child.is_named and child.type == "existing" for child in node.children)
        resource = Resource(_text(symbol), type_name, api_version, existing, body, _line(node))
        found = [resource]
        for prop in body.named_children:
            for child in prop.named_children:
                if child.type == "resource_declaration":
                    found.extend(self._resource(child, parent=resource))
        return found

    def resource(self, symbol: str) -> Resource:
        for resource in self.resources:
            if resource.symbol == symbol:
                return resource
        raise BicepError(f"{self.path.name}: no resource named {symbol}")

    def resources_of_type(self, type_name: str) -> list[Resource]:
        return [r for r in self.resources if r.type.lower() == type_name.lower()]

    # -- values -------------------------------------------------------------------------------

    def literal(self, node: Node) -> BicepLiteral:
        """The value of a literal expression (strings, numbers, booleans, null, objects, arrays).

        Variables holding literals are followed; anything computed raises :class:`BicepError`.
        """
        if node.type == "string":
            value = _string_value(node)
            if value is None:
                raise BicepError(f"{self.where(node)}: {_text(node)} is an interpolated string, not a literal")
            return value
        if node.type == "number":
            return int(_text(node))
        if node.type == "boolean":
            return _text(node) == "true"
        if node.type == "null":
            return None
        if node.type == "array":
            return [self.literal(child) for child in node.named_children if child.type != "comment"]
        if node.type == "object":
            return {key: self.literal(value) for key, value in _object_properties(self, node)}
        if node.type == "identifier" and _text(node) in self.variables:
            return self.literal(self.variables[_text(node)])
        if node.type == "member_expression":
            base, prop = node.named_children[0], node.named_children[-1]
            container = self.literal(base)
            if isinstance(container, dict) and _text(prop) in container:
                return container[_text(prop)]
        raise BicepError(f"{self.where(node)}: {_text(node)!r} is not a literal")

    def at(self, node: Node, dotted: str) -> Node:
        """The node at ``a.b.c`` inside an object literal; raise if any step is missing."""
        current = node
        for step in dotted.split("."):
            if current.type != "object":
                raise BicepError(f"{self.where(current)}: cannot look up {step!r} in {current.type}")
            found = property_node(current, step)
            if found is None:
                raise BicepError(f"{self.where(current)}: no property {step!r} (looking for {dotted})")
            current = found
        return current

    def role_assignments(self) -> list[RoleAssignment]:
        """Role assignments declared in this file, with their role definition ids resolved."""
        found: list[RoleAssignment] = []
        for resource in self.resources_of_type(ROLE_ASSIGNMENT_TYPE):
            role_node = self.at(resource.body, "properties.roleDefinitionId")
            role_id = self._role_definition_id(role_node)
            scope_type: str | None = None
            scope = property_node(resource.body, "scope")
            if scope is not None and scope.type == "identifier":
                scope_type = self.resource(_text(scope)).type
            principal = property_node(self.at(resource.body, "properties"), "principalType")
            principal_type = self.literal(principal) if principal is not None else None
            found.append(
                RoleAssignment(
                    file=self.path,
                    symbol=resource.symbol,
                    role_definition_id=role_id,
                    scope_type=scope_type,
                    principal_type=principal_type if isinstance(principal_type, str) else None,
                    line=resource.line,
                )
            )
        return found

    def _role_definition_id(self, node: Node) -> str:
        # subscriptionResourceId('Microsoft.Authorization/roleDefinitions', <guid>) or resourceId(...)
        if node.type == "call_expression":
            function = node.child_by_field_name("function")
            arguments = node.child_by_field_name("arguments")
            if function is not None and arguments is not None and _text(function) in _RESOURCE_ID_FUNCTIONS:
                args = arguments.named_children
                if len(args) == 2 and self.literal(args[0]) == ROLE_DEFINITION_TYPE:
                    value = self.literal(args[1])
                    if isinstance(value, str):
                        return value.lower()
        value = self.literal(node)
        if isinstance(value, str):
            # A full id: /providers/Microsoft.Authorization/roleDefinitions/<guid>
            return value.rsplit("/", 1)[-1].lower()
        raise BicepError(f"{self.where(node)}: cannot tell which role {_text(node)!r} grants")


def property_node(obj: Node, key: str) -> Node | None:
    """The value node of property ``key`` in an object literal, if present."""
    for prop in obj.named_children:
        if prop.type != "object_property" or len(prop.named_children) < 2:
            continue
        key_node, value = prop.named_children[0], prop.named_children[-1]
        if _property_key(key_node) == key:
            return value
    return None


def _property_key(node: Node) -> str | None:
    if node.type == "identifier":
        return _text(node)
    return _string_value(node)


def _object_properties(file: BicepFile, obj: Node) -> Iterator[tuple[str, Node]]:
    for prop in obj.named_children:
        if prop.type != "object_property":
            continue
        if prop.named_children and prop.named_children[0].type == "resource_declaration":
            continue
        key_node, value = prop.named_children[0], prop.named_children[-1]
        key = _property_key(key_node)
        if key is None:
            raise BicepError(f"{file.where(prop)}: property name {_text(key_node)} is computed")
        yield key, value


def _declaration_body(node: Node) -> Node | None:
    """The object of ``= {...}`` or ``= if (cond) {...}``; ``None`` for loops and the like."""
    if node.type == "object":
        return node
    if node.type == "if_statement":
        return next((c for c in node.named_children if c.type == "object"), None)
    return None


@dataclass(frozen=True)
class Value:
    """An expression together with the file it is written in."""

    file: BicepFile
    node: Node

    def __str__(self) -> str:
        return f"{self.file.where(self.node)} {_text(self.node)}"


class BicepProject:
    """All ``.bicep`` files under a folder, with module calls between them resolved."""

    def __init__(self, root: Path, entry: str = "main.bicep") -> None:
        self.root = root
        self.files = {path.resolve(): BicepFile.load(path) for path in sorted(root.rglob("*.bicep"))}
        self.entry = self.file(root / entry)

    @classmethod
    def from_sources(cls, root: Path, sources: dict[str, str], entry: str = "main.bicep") -> BicepProject:
        """Write ``sources`` (relative path -> text) under ``root`` and load them (for tests of this module)."""
        for relative, text in sources.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return cls(root, entry)

    def file(self, path: Path) -> BicepFile:
        try:
            return self.files[path.resolve()]
        except KeyError:
            raise BicepError(f"{path} is not a Bicep file of this project") from None

    def module_target(self, caller: BicepFile, module: Module) -> Path:
        return (caller.path.parent / module.path).resolve()

    def callers(self, target: BicepFile) -> list[tuple[BicepFile, Module]]:
        """Every module declaration (in any file) that deploys ``target``."""
        return [
            (caller, module)
            for caller in self.files.values()
            for module in caller.modules
            if not module.from_registry and self.module_target(caller, module) == target.path.resolve()
        ]

    # -- wiring checks ------------------------------------------------------------------------

    def syntax_errors(self) -> list[str]:
        return [problem for file in self.files.values() for problem in file.syntax_errors()]

    def module_problems(self) -> list[str]:
        """Registry modules, missing module files, unknown parameters passed, required ones left out."""
        problems: list[str] = []
        for caller in self.files.values():
            for module in caller.modules:
                where = f"{caller.path.name}:{module.line} module {module.symbol}"
                if module.from_registry:
                    problems.append(f"{where}: {module.path!r} needs a registry; use a local file")
                    continue
                target_path = self.module_target(caller, module)
                if not target_path.is_file():
                    problems.append(f"{where}: {module.path!r} does not exist")
                    continue
                declared = self.file(target_path).params
                for name in module.params:
                    if name not in declared:
                        problems.append(f"{where}: passes {name!r}, which {module.path} does not declare")
                for name, param in declared.items():
                    if param.required and name not in module.params:
                        problems.append(f"{where}: does not pass required parameter {name!r} of {module.path}")
        return problems

    def parameters_file_problems(self, parameters_file: Path) -> list[str]:
        """Parameters given in an azd/ARM parameters file that the entry template does not declare,
        required ones it leaves out, and secure ones given as literals rather than ``${VAR}``."""
        document = json.loads(parameters_file.read_text(encoding="utf-8"))
        given: dict[str, dict[str, object]] = document.get("parameters", {})
        declared = self.entry.params
        problems = [
            f"{parameters_file.name}: {name!r} is not a parameter of {self.entry.path.name}"
            for name in given
            if name not in declared
        ]
        problems += [
            f"{parameters_file.name}: required parameter {name!r} of {self.entry.path.name} is not given"
            for name, param in declared.items()
            if param.required and name not in given
        ]
        for name, entry in given.items():
            param = declared.get(name)
            if param is None or not param.secure:
                continue
            value = entry.get("value")
            if "reference" in entry:
                continue  # a Key Vault reference is fine: the secret stays in the vault
            if not isinstance(value, str) or not _AZD_PLACEHOLDER.match(value):
                problems.append(
                    f"{parameters_file.name}: secure parameter {name!r} must come from the azd environment "
                    f'("${{VAR}}"), not a literal value'
                )
        return problems

    # -- following values ---------------------------------------------------------------------

    def origins(self, value: Value) -> list[Value] | None:
        """Where an identifier's value comes from: its variable's expression, or for a parameter the
        value each caller passes (its default where a caller passes none).

        ``None`` when there is nothing to follow: not an identifier, a resource or module symbol, or
        a parameter of the entry template (its value comes from outside).
        """
        node, file = value.node, value.file
        if node.type == "parenthesized_expression":
            return [Value(file, node.named_children[0])]
        if node.type != "identifier":
            return None
        name = _text(node)
        if name in file.variables:
            return [Value(file, file.variables[name])]
        param = file.params.get(name)
        callers = self.callers(file) if param is not None else []
        if param is None or not callers:
            return None
        found: list[Value] = []
        for caller, module in callers:
            if name in module.params:
                found.append(Value(caller, module.params[name]))
            elif param.default is not None:
                found.append(Value(file, param.default))
        return found

    def param_chain(self, value: Value) -> list[tuple[BicepFile, Param]]:
        """Every parameter a value is passed through, from the module using it up to the entry template."""
        node, file = value.node, value.file
        if node.type != "identifier" or _text(node) not in file.params:
            return []
        chain = [(file, file.params[_text(node)])]
        for origin in self.origins(value) or []:
            chain += self.param_chain(origin)
        return chain

    def object_entries(self, value: Value) -> dict[str, Value]:
        """The keys an object-valued expression can have, each with the expression giving its value.

        Understands object literals, variables, parameters (through every module call), ``union()``,
        ``a ? b : c`` (keys of both branches) and parentheses; anything else raises :class:`BicepError`.
        """
        node, file = value.node, value.file
        if node.type == "object":
            return {key: Value(file, child) for key, child in _object_properties(file, node)}
        if node.type == "parenthesized_expression":
            return self.object_entries(Value(file, node.named_children[0]))
        if node.type == "ternary_expression":
            consequence = node.child_by_field_name("consequence")
            alternative = node.child_by_field_name("alternative")
            branches = [consequence, alternative] if consequence and alternative else node.named_children[1:]
            merged: dict[str, Value] = {}
            for branch in branches:
                merged |= self.object_entries(Value(file, branch))
            return merged
        if node.type == "call_expression":
            function = node.child_by_field_name("function")
            arguments = node.child_by_field_name("arguments")
            if function is not None and arguments is not None and _text(function) == "union":
                merged = {}
                for argument in arguments.named_children:
                    merged |= self.object_entries(Value(file, argument))
                return merged
        if node.type == "identifier":
            origins = self.origins(value)
            if origins is not None:
                merged = {}
                for origin in origins:
                    merged |= self.object_entries(origin)
                return merged
        raise BicepError(f"{file.where(node)}: cannot list the keys of {_text(node)!r}")

    def app_settings(self) -> dict[str, Value]:
        """The app settings of the function app(s): ``sites/config`` named ``appsettings`` and
        ``siteConfig.appSettings`` arrays of ``{name, value}``."""
        settings: dict[str, Value] = {}
        found_any = False
        for file in self.files.values():
            for resource in file.resources_of_type("Microsoft.Web/sites/config"):
                name = property_node(resource.body, "name")
                if name is None or _string_value(name) != "appsettings":
                    continue
                found_any = True
                settings |= self.object_entries(Value(file, file.at(resource.body, "properties")))
            for resource in file.resources_of_type("Microsoft.Web/sites"):
                properties = property_node(resource.body, "properties")
                site_config = property_node(properties, "siteConfig") if properties is not None else None
                array = property_node(site_config, "appSettings") if site_config is not None else None
                if array is None:
                    continue
                found_any = True
                if array.type != "array":
                    raise BicepError(f"{file.where(array)}: siteConfig.appSettings is not an array literal")
                for item in array.named_children:
                    if item.type != "object":
                        raise BicepError(f"{file.where(item)}: app setting is not an object literal")
                    key = file.literal(file.at(item, "name"))
                    if not isinstance(key, str):
                        raise BicepError(f"{file.where(item)}: app setting name is not a string")
                    settings[key] = Value(file, file.at(item, "value"))
        if not found_any:
            raise BicepError("no function app settings found (sites/config 'appsettings' or siteConfig.appSettings)")
        return settings

    def role_assignments(self) -> list[RoleAssignment]:
        return [assignment for file in self.files.values() for assignment in file.role_assignments()]
