"""Offline checks of the azd/Bicep deployment (infra/, azure.yaml, .funcignore).

There is no Bicep CLI here, so the template is read with tree-sitter-bicep (tests/infra/bicep.py)
and checked for what the issue asks: it parses, its parameters and modules are wired, it
creates the resources and role assignments Hookflow needs, its app settings agree with
shared/settings.py and local.settings.sample.json, the signing keys only travel as secure
parameters, and no secret is written in the repository.

Every check is a function returning a list of problems; the ``TestChecksFail*`` classes feed
each one a small bad input to prove it reports it, so no check can pass by finding nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from tree_sitter import Node

from shared.settings import SETTINGS, Scope, SettingSpec
from tests.infra.bicep import BicepError, BicepFile, BicepProject, Resource, RoleAssignment, Value

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PARAMETERS_FILE = INFRA / "main.parameters.json"
LOCAL_SAMPLE = REPO / "local.settings.sample.json"

# Settings the Functions host (not Hookflow) reads, and where each may appear. Anything else in
# local.settings.sample.json or the Bicep app settings must be declared in shared/settings.py.
HOST_SETTINGS: dict[str, Scope] = {
    "FUNCTIONS_WORKER_RUNTIME": "local",  # on Flex Consumption: functionAppConfig.runtime instead
    "AzureWebJobsFeatureFlags": "local",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "azure",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "azure",
    "AzureWebJobsStorage__blobServiceUri": "azure",
    "AzureWebJobsStorage__queueServiceUri": "azure",
}

# Built-in role definition ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
APP_INSIGHTS = "Microsoft.Insights/components"
REQUIRED_ROLES: dict[tuple[str, str], str] = {
    (STORAGE_ACCOUNT, "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"): "Storage Blob Data Owner",
    (STORAGE_ACCOUNT, "974c5e8b-45b9-4653-ba55-5f855dd0fb88"): "Storage Queue Data Contributor",
    (STORAGE_ACCOUNT, "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"): "Storage Table Data Contributor",
    (APP_INSIGHTS, "3913510d-42f4-4e42-8a64-420c390055eb"): "Monitoring Metrics Publisher",
}

REQUIRED_OUTPUTS = (
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "SERVICE_API_NAME",
    "SERVICE_API_URI",
)

# What the deployed package must leave out, and what it must keep.
FUNCIGNORE_EXCLUDED = (
    "tests/unit/test_settings.py",
    "infra/main.bicep",
    "bench/run.py",
    "scripts/dev.py",
    "node_modules/azurite/package.json",
    "local.settings.json",
    "local.settings.sample.json",
    ".venv/bin/python",
    ".azure/dev/.env",
)
FUNCIGNORE_KEPT = ("function_app.py", "host.json", "requirements.txt", "shared/settings.py", "functions/http.py")


@pytest.fixture(scope="module")
def project() -> BicepProject:
    return BicepProject(INFRA)


# --------------------------------------------------------------------------------------------
# Checks (each returns the problems it finds)
# --------------------------------------------------------------------------------------------


def agreement_problems(specs: Iterable[SettingSpec], local_keys: set[str], azure_keys: set[str]) -> list[str]:
    """Settings missing from, foreign to, or out of scope in the local sample and the Bicep app settings."""
    problems: list[str] = []
    sources = {"local": ("local.settings.sample.json", local_keys), "azure": ("the Bicep app settings", azure_keys)}
    known: dict[str, Scope] = {}
    for spec in specs:
        known[spec.name] = spec.scope
        for where, (label, keys) in sources.items():
            wanted = spec.scope in (where, "both")
            if wanted and spec.name not in keys:
                problems.append(f"{spec.name} (scope {spec.scope!r}) is missing from {label}")
            if not wanted and spec.name in keys:
                problems.append(f"{spec.name} (scope {spec.scope!r}) must not be set in {label}")
    for where, (label, keys) in sources.items():
        for key in sorted(keys):
            scope = known.get(key) or HOST_SETTINGS.get(key)
            if scope is None:
                problems.append(f"{label} sets {key}, which is neither in shared.settings.SETTINGS nor a host setting")
            elif key in HOST_SETTINGS and scope not in (where, "both"):
                problems.append(f"{label} sets host setting {key}, which belongs in {scope!r} only")
    return problems


def role_problems(assignments: Iterable[RoleAssignment]) -> list[str]:
    """Required role assignments that are missing, and assignments not made to a service principal."""
    assignments = list(assignments)
    found = {(a.scope_type, a.role_definition_id) for a in assignments if a.scope_type is not None}
    problems = [
        f"no {name} role assignment on a {scope_type}"
        for (scope_type, role_id), name in REQUIRED_ROLES.items()
        if (scope_type, role_id) not in found
    ]
    problems += [
        f"{a.file.name}:{a.line} {a.symbol}: principalType should be 'ServicePrincipal' (a managed identity)"
        for a in assignments
        if a.principal_type != "ServicePrincipal"
    ]
    return problems


def signing_key_problems(project: BicepProject, parameters_file: Path) -> list[str]:
    """HOOKFLOW_SIGNING_KEYS must come from an azd-filled, @secure, default-less entry parameter
    through @secure module parameters only, and no output may expose a secure parameter."""
    settings = project.app_settings()
    if "HOOKFLOW_SIGNING_KEYS" not in settings:
        return ["HOOKFLOW_SIGNING_KEYS is not an app setting"]
    value = settings["HOOKFLOW_SIGNING_KEYS"]
    chain = project.param_chain(value)
    if not chain:
        return [f"HOOKFLOW_SIGNING_KEYS is set from {value}, not from a parameter"]
    problems = [
        f"{file.path.name}:{param.line} parameter {param.name!r} carries the signing keys but is not @secure()"
        for file, param in chain
        if not param.secure
    ]
    top_file, top = chain[-1]
    if top_file is not project.entry:
        problems.append(f"the signing keys start at {top_file.path.name}, not at {project.entry.path.name}")
    if top.has_default:
        problems.append(f"parameter {top.name!r} has a default: the keys would be written in the template")
    given = json.loads(parameters_file.read_text(encoding="utf-8")).get("parameters", {})
    if top.name not in given:
        problems.append(f"{parameters_file.name} does not map {top.name!r} to an azd environment variable")
    for file in project.files.values():
        secure = {name for name, param in file.params.items() if param.secure}
        for output, node in file.outputs.items():
            leaked = secure & set(_identifiers(node))
            if leaked:
                problems.append(f"{file.path.name}: output {output} exposes secure parameter(s) {sorted(leaked)}")
    return problems


def _identifiers(node: Node) -> Iterator[str]:
    if node.type == "identifier":
        yield (node.text or b"").decode()
    for child in node.named_children:
        yield from _identifiers(child)


# Patterns are written so that their own source text does not match them (this file is scanned too).
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("storage account key", re.compile(r"AccountKey=[A-Za-z0-9+/]{20,}")),
    ("shared access signature", re.compile(r"SharedAccessSignature[= ][^;\s\"']{10,}")),
    ("SAS signature", re.compile(r"\bsig=[A-Za-z0-9%+/]{20,}")),
    ("PEM block", re.compile(r"-----BEGIN [A-Z0-9 ]+-----")),
)
# Azurite's account key is published in its documentation: a connection string naming the
# emulator account is configuration, not a secret.
PUBLIC_ACCOUNT = "devstoreaccount1"
SIGNING_KEY_LITERALS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    ((".json",), re.compile(r"\"HOOKFLOW_SIGNING_KEYS\"\s*:\s*\"(?P<value>[^\"]*)\"")),
    ((".bicep", ".bicepparam"), re.compile(r"\bHOOKFLOW_SIGNING_KEYS\s*[:=]\s*'(?P<value>[^']*)'")),
    ((".yaml", ".yml"), re.compile(r"^\s*-?\s*HOOKFLOW_SIGNING_KEYS\s*:\s*(?P<value>.*?)\s*(?:#.*)?$", re.MULTILINE)),
    ((".env",), re.compile(r"^\s*(?:export\s+)?HOOKFLOW_SIGNING_KEYS\s*=\s*(?P<value>.*?)\s*$", re.MULTILINE)),
)
# Values that name where the key comes from instead of holding it.
_REFERENCE = re.compile(r"^[\"']?(?:\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$\{\{[^}]*\}\})?[\"']?$")


def scan_text(name: str, text: str) -> list[str]:
    """Secret literals in one file's text, as ``name:line: what``."""
    problems: list[str] = []
    for label, pattern in SECRET_PATTERNS:
        for match in pattern.finditer(text):
            start = text.rfind("\n", 0, match.start()) + 1
            end = text.find("\n", match.end())
            line = text[start : end if end != -1 else len(text)]
            if label == "storage account key" and PUBLIC_ACCOUNT in line:
                continue
            problems.append(f"{name}:{text.count(chr(10), 0, match.start()) + 1}: {label}")
    suffix = Path(name).suffix or Path(name).name
    for suffixes, pattern in SIGNING_KEY_LITERALS:
        if suffix not in suffixes:
            continue
        for match in pattern.finditer(text):
            if not _REFERENCE.match(match.group("value")):
                line_number = text.count("\n", 0, match.start()) + 1
                problems.append(f"{name}:{line_number}: HOOKFLOW_SIGNING_KEYS holds a literal value")
    return problems


def repository_files(root: Path) -> list[Path]:
    """The files git would commit (tracked or not ignored); a filtered walk where git is unavailable."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        listed = ""
    if listed:
        return sorted({root / name for name in listed.split("\0") if name and (root / name).is_file()})
    skipped_dirs = {
        ".git",
        ".venv",
        "node_modules",
        ".azure",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    }
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skipped_dirs]
        files += [Path(folder) / n for n in names if n != "local.settings.json"]
    return sorted(files)


def funcignore_problems(patterns: list[str], excluded: Iterable[str], kept: Iterable[str]) -> list[str]:
    """Paths .funcignore should leave out of the package but does not, and paths it wrongly drops."""

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        for raw in patterns:
            pattern = raw.strip().strip("/")
            if fnmatch(path, pattern) or any(fnmatch(p, pattern) for p in prefixes + parts):
                return True
        return False

    problems = [f".funcignore does not exclude {path}" for path in excluded if not ignored(path)]
    problems += [f".funcignore excludes {path}, which the app needs" for path in kept if ignored(path)]
    return problems


def read_funcignore(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def read_simple_yaml(text: str) -> dict[str, object]:
    """Nested ``key: value`` mappings (all azure.yaml uses); no lists, anchors or multi-line values."""
    root: dict[str, object] = {}
    stack: list[tuple[int, dict[str, object]]] = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if value.strip():
            parent[key] = value.strip().strip("'\"")
        else:
            child: dict[str, object] = {}
            parent[key] = child
            stack.append((indent, child))
    return root


def _only(project: BicepProject, type_name: str) -> tuple[BicepFile, Resource]:
    """The one resource of a type the template creates (``existing`` references do not count)."""
    found = [
        (file, resource)
        for file in project.files.values()
        for resource in file.resources_of_type(type_name)
        if not resource.existing
    ]
    assert len(found) == 1, f"expected one {type_name}, found {[r.symbol for _, r in found]}"
    return found[0]


def _text(node: Node) -> str:
    return (node.text or b"").decode()


# --------------------------------------------------------------------------------------------
# The checks, applied to the repository
# --------------------------------------------------------------------------------------------


class TestTemplateParses:
    """Every Bicep file is valid syntax and the template is self-contained."""

    def test_every_bicep_file_parses_without_error_nodes(self, project: BicepProject) -> None:
        """tree-sitter-bicep finds no ERROR or MISSING node in any file under infra/."""
        assert len(project.files) >= 2
        assert project.syntax_errors() == []

    def test_main_deploys_at_subscription_scope(self, project: BicepProject) -> None:
        """main.bicep creates its own resource group, like the azd function templates."""
        assert project.entry.target_scope == "subscription"
        _only(project, "Microsoft.Resources/resourceGroups")

    def test_every_resource_names_an_api_version(self, project: BicepProject) -> None:
        """Each resource type carries an explicit API version (no registry module hides one)."""
        missing = [
            f"{file.path.name}:{r.line} {r.symbol}"
            for file in project.files.values()
            for r in file.resources
            if not r.api_version
        ]
        assert missing == []


class TestWiring:
    """Parameters and modules fit together as the Bicep compiler would require."""

    def test_parameters_file_matches_main(self, project: BicepProject) -> None:
        """main.parameters.json names only parameters of main.bicep, gives every required one, and no secure literal."""
        assert project.parameters_file_problems(PARAMETERS_FILE) == []

    def test_modules_exist_and_get_the_right_parameters(self, project: BicepProject) -> None:
        """Every module is a local file, gets only declared parameters and all required ones."""
        assert project.entry.modules, "main.bicep deploys no module"
        assert project.module_problems() == []

    def test_abbreviations_used_exist(self, project: BicepProject) -> None:
        """Every abbrs.<name> used in main.bicep is defined in abbreviations.json."""
        abbreviations = json.loads((INFRA / "abbreviations.json").read_text(encoding="utf-8"))

        def members(node: Node) -> Iterator[str]:
            if node.type == "member_expression" and _text(node.named_children[0]) == "abbrs":
                yield _text(node.named_children[-1])
            for child in node.named_children:
                yield from members(child)

        used = set(members(project.entry.root))
        assert used, "main.bicep uses no abbreviation"
        assert sorted(used - set(abbreviations)) == []

    def test_outputs_azd_needs(self, project: BicepProject) -> None:
        """main.bicep outputs what azd and the docs rely on (location, tenant, group, app name and URL)."""
        assert sorted(set(REQUIRED_OUTPUTS) - set(project.entry.outputs)) == []


class TestResources:
    """The template creates the resources the issue lists, configured as it says."""

    def test_storage_account_is_key_less_https_only_tls12(self, project: BicepProject) -> None:
        """No shared-key access, HTTPS only, TLS 1.2 minimum, no public blobs."""
        file, storage = _only(project, STORAGE_ACCOUNT)
        properties = file.at(storage.body, "properties")
        assert file.literal(file.at(properties, "allowSharedKeyAccess")) is False
        assert file.literal(file.at(properties, "supportsHttpsTrafficOnly")) is True
        assert file.literal(file.at(properties, "minimumTlsVersion")) == "TLS1_2"
        assert file.literal(file.at(properties, "allowBlobPublicAccess")) is False

    def test_deployment_container_exists(self, project: BicepProject) -> None:
        """A blob container for the Flex Consumption deployment package is created."""
        _only(project, "Microsoft.Storage/storageAccounts/blobServices/containers")

    def test_user_assigned_identity_is_created_and_used(self, project: BicepProject) -> None:
        """The identity exists, and its ids reach the function app and the role assignments."""
        _only(project, "Microsoft.ManagedIdentity/userAssignedIdentities")
        modules = {m.symbol: m for m in project.entry.modules}
        identity = next(m.symbol for m in modules.values() if m.path.endswith("user-assigned-identity.bicep"))
        wiring = {"rbac": {"principalId": "principalId"}, "api": {"identityId": "id", "identityClientId": "clientId"}}
        for module, params in wiring.items():
            for param, output in params.items():
                assert _text(modules[module].params[param]) == f"{identity}.outputs.{output}"

    def test_flex_consumption_plan(self, project: BicepProject) -> None:
        """The plan is FC1 / FlexConsumption on Linux."""
        file, plan = _only(project, "Microsoft.Web/serverfarms")
        assert file.literal(file.at(plan.body, "sku")) == {"name": "FC1", "tier": "FlexConsumption"}
        assert file.literal(file.at(plan.body, "properties.reserved")) is True

    def test_function_app_is_linux_python_311_https_tls12_no_ftp(self, project: BicepProject) -> None:
        """The site is a Linux function app on Python 3.11, HTTPS only, TLS 1.2, FTPS off."""
        file, site = _only(project, "Microsoft.Web/sites")
        assert file.literal(file.at(site.body, "kind")) == "functionapp,linux"
        assert file.literal(file.at(site.body, "properties.httpsOnly")) is True
        assert file.literal(file.at(site.body, "properties.siteConfig.minTlsVersion")) == "1.2"
        assert file.literal(file.at(site.body, "properties.siteConfig.ftpsState")) == "Disabled"
        assert file.literal(file.at(site.body, "identity.type")) == "UserAssigned"
        config = file.at(site.body, "properties.functionAppConfig")
        assert file.literal(file.at(config, "runtime")) == {"name": "python", "version": "3.11"}
        assert file.at(config, "scaleAndConcurrency.maximumInstanceCount") is not None
        assert file.at(config, "scaleAndConcurrency.instanceMemoryMB") is not None

    def test_function_app_deploys_from_blob_with_the_identity(self, project: BicepProject) -> None:
        """Flex Consumption pulls the package from the blob container with the user-assigned identity."""
        file, site = _only(project, "Microsoft.Web/sites")
        storage = file.at(site.body, "properties.functionAppConfig.deployment.storage")
        assert file.literal(file.at(storage, "type")) == "blobContainer"
        assert file.literal(file.at(storage, "authentication.type")) == "UserAssignedIdentity"
        assert "deploymentContainerName" in _text(file.at(storage, "value"))

    def test_function_app_is_tagged_for_azd(self, project: BicepProject) -> None:
        """azd finds the app through the tag azd-service-name: api (the service in azure.yaml)."""
        file, site = _only(project, "Microsoft.Web/sites")
        tags = project.object_entries(Value(file, file.at(site.body, "tags")))
        assert file.literal(tags["azd-service-name"].node) == "api"

    def test_monitoring_has_local_auth_off(self, project: BicepProject) -> None:
        """Log Analytics and Application Insights accept Entra ID only."""
        file, workspace = _only(project, "Microsoft.OperationalInsights/workspaces")
        assert file.literal(file.at(workspace.body, "properties.features.disableLocalAuth")) is True
        file, insights = _only(project, APP_INSIGHTS)
        assert file.literal(file.at(insights.body, "properties.DisableLocalAuth")) is True
        assert "logAnalytics.id" in _text(file.at(insights.body, "properties.WorkspaceResourceId"))

    def test_role_assignments(self, project: BicepProject) -> None:
        """Blob Data Owner, Queue and Table Data Contributor on storage, Metrics Publisher on App Insights."""
        assert role_problems(project.role_assignments()) == []


class TestAppSettings:
    """The function app's settings agree with shared/settings.py and the local sample."""

    def test_settings_agree_across_code_local_sample_and_bicep(self, project: BicepProject) -> None:
        """Every SettingSpec is in the sources its scope names, and nothing unknown is in either."""
        local = json.loads(LOCAL_SAMPLE.read_text(encoding="utf-8"))["Values"]
        assert agreement_problems(SETTINGS, set(local), set(project.app_settings())) == []

    def test_values_azure_needs(self, project: BicepProject) -> None:
        """Identity-based storage, the SSRF guard on, public base URL from the app's host name."""
        settings = project.app_settings()

        def literal(key: str) -> object:
            return settings[key].file.literal(settings[key].node)

        assert literal("AzureWebJobsStorage__credential") == "managedidentity"
        assert literal("HOOKFLOW_ALLOW_PRIVATE_NETWORK") == "false"
        assert _text(settings["HOOKFLOW_PUBLIC_BASE_URL"].node).startswith("'https://${")
        assert "defaultHostName" in _text(settings["HOOKFLOW_PUBLIC_BASE_URL"].node)
        assert "Authorization=AAD" in _text(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"].node)
        client_id = project.param_chain(settings["AzureWebJobsStorage__clientId"])
        assert client_id, "AzureWebJobsStorage__clientId does not come from a parameter"
        for key in ("blob", "queue", "table"):
            assert f"primaryEndpoints.{key}" in _text(settings[f"AzureWebJobsStorage__{key}ServiceUri"].node)

    def test_no_connection_string_or_plan_specific_settings(self, project: BicepProject) -> None:
        """No storage connection string in Azure, and none of the settings Flex Consumption does not use."""
        forbidden = {
            "AzureWebJobsStorage",
            "FUNCTIONS_WORKER_RUNTIME",
            "FUNCTIONS_EXTENSION_VERSION",
            "WEBSITE_RUN_FROM_PACKAGE",
        }
        assert sorted(forbidden & set(project.app_settings())) == []


class TestSigningKeys:
    """The signing keys reach the app only through secure parameters filled by azd."""

    def test_signing_keys_flow_through_secure_parameters(self, project: BicepProject) -> None:
        """From main.parameters.json through @secure() parameters to the app setting, never output."""
        assert signing_key_problems(project, PARAMETERS_FILE) == []

    def test_azd_can_generate_the_first_key(self, project: BicepProject) -> None:
        """The entry parameter asks azd to generate a value of at least 32 characters without commas."""
        chain = project.param_chain(project.app_settings()["HOOKFLOW_SIGNING_KEYS"])
        file, param = chain[-1]
        metadata = file.literal(param.decorators["metadata"][0])
        assert isinstance(metadata, dict)
        azd = metadata["azd"]
        assert isinstance(azd, dict)
        assert azd["type"] == "generate"
        config = azd["config"]
        assert isinstance(config, dict)
        assert isinstance(config["length"], int)
        assert config["length"] >= 32
        # azd's symbols include no comma today; noSpecial keeps it that way whatever azd adds.
        assert config.get("noSpecial") is True

    def test_parameters_file_reads_the_key_from_the_azd_environment(self) -> None:
        """The value is the placeholder ${HOOKFLOW_SIGNING_KEYS}, which azd substitutes."""
        given = json.loads(PARAMETERS_FILE.read_text(encoding="utf-8"))["parameters"]
        assert given["signingKeys"] == {"value": "${HOOKFLOW_SIGNING_KEYS}"}


class TestNoSecrets:
    """No file git would commit holds a secret literal."""

    def test_repository_has_no_secret_literals(self) -> None:
        """Account keys, SAS tokens, PEM blocks and literal signing keys are absent everywhere."""
        files = repository_files(REPO)
        assert any(path.name == "main.bicep" for path in files), "the scan does not see infra/"
        problems: list[str] = []
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary or unreadable: not a place a literal setting is written
            problems += scan_text(str(path.relative_to(REPO)), text)
        assert problems == []


class TestAzdProject:
    """azure.yaml and .funcignore describe the service azd deploys."""

    def test_azure_yaml_declares_the_python_function_service(self) -> None:
        """name hookflow, services.api: project ., language python, host function."""
        document = read_simple_yaml((REPO / "azure.yaml").read_text(encoding="utf-8"))
        assert document["name"] == "hookflow"
        assert document["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}

    def test_funcignore_keeps_tooling_out_of_the_package(self) -> None:
        """Tests, infra, bench, scripts, node_modules and local settings stay out; the app stays in."""
        patterns = read_funcignore(REPO / ".funcignore")
        assert funcignore_problems(patterns, FUNCIGNORE_EXCLUDED, FUNCIGNORE_KEPT) == []


# --------------------------------------------------------------------------------------------
# The checks fail when they should
# --------------------------------------------------------------------------------------------

_MODULE = """
param name string
param size int = 1
@secure()
param secret string
"""


def _project(tmp_path: Path, main: str, others: dict[str, str] | None = None) -> BicepProject:
    return BicepProject.from_sources(tmp_path, {"main.bicep": main} | (others or {}))


class TestChecksFailOnBadBicep:
    """The Bicep reader reports broken syntax, wiring and values instead of passing quietly."""

    @pytest.mark.parametrize(
        "source",
        ["param x string =\n", "resource r 'A.B/c@2020-01-01' = {\n  name: 'x'\n", "var a = {\n  b:\n}\n"],
    )
    def test_syntax_errors_are_reported(self, source: str) -> None:
        """A truncated declaration yields at least one ERROR/MISSING problem."""
        assert BicepFile(Path("bad.bicep"), source).syntax_errors() != []

    def test_valid_source_has_no_syntax_errors(self) -> None:
        """The reader does not flag valid Bicep (the negative of the test above)."""
        assert BicepFile(Path("ok.bicep"), _MODULE).syntax_errors() == []

    def test_params_report_defaults_and_decorators(self) -> None:
        """Defaults, nullable types and @secure() are read from the declarations."""
        params = BicepFile(Path("m.bicep"), _MODULE + "param maybe string?\n").params
        assert (params["name"].required, params["size"].required, params["maybe"].required) == (True, False, False)
        assert params["secret"].secure
        assert not params["name"].secure

    def test_module_problems_are_reported(self, tmp_path: Path) -> None:
        """Unknown parameters passed, required ones left out, missing files and registry modules."""
        main = """
module good 'app/m.bicep' = {
  name: 'good'
  params: {
    name: 'x'
    secret: 'y'
  }
}
module bad 'app/m.bicep' = {
  name: 'bad'
  params: {
    nmae: 'typo'
  }
}
module gone 'app/nope.bicep' = {
  name: 'gone'
}
module remote 'br/public:avm/res/web/site:0.15.1' = {
  name: 'remote'
}
"""
        problems = _project(tmp_path, main, {"app/m.bicep": _MODULE}).module_problems()
        joined = "\n".join(problems)
        assert "passes 'nmae'" in joined
        assert "required parameter 'name'" in joined
        assert "required parameter 'secret'" in joined
        assert "nope.bicep' does not exist" in joined
        assert "needs a registry" in joined
        assert not any("module good" in p for p in problems)

    def test_parameters_file_problems_are_reported(self, tmp_path: Path) -> None:
        """An unknown parameter, a missing required one and a literal secure value are all reported."""
        project = _project(tmp_path, "@secure()\nparam key string\nparam env string\nparam opt string = ''\n")
        document = {"parameters": {"key": {"value": "hunter2-literal"}, "unknown": {"value": "1"}}}
        parameters = tmp_path / "main.parameters.json"
        parameters.write_text(json.dumps(document), encoding="utf-8")
        joined = "\n".join(project.parameters_file_problems(parameters))
        assert "'unknown' is not a parameter" in joined
        assert "'env' of main.bicep is not given" in joined
        assert "secure parameter 'key'" in joined
        document["parameters"] = {"key": {"value": "${KEY}"}, "env": {"value": "${AZURE_ENV_NAME}"}}
        parameters.write_text(json.dumps(document), encoding="utf-8")
        assert project.parameters_file_problems(parameters) == []

    def test_resources_get_full_types_and_api_versions(self) -> None:
        """Nested children inherit the parent's type and version; `existing` is noticed."""
        source = """
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'x'
  resource settings 'config' = {
    name: 'appsettings'
    properties: {}
  }
}
"""
        resources = {r.symbol: r for r in BicepFile(Path("r.bicep"), source).resources}
        assert (resources["site"].type, resources["site"].api_version, resources["site"].existing) == (
            "Microsoft.Web/sites",
            "2024-04-01",
            True,
        )
        assert (resources["settings"].type, resources["settings"].api_version) == (
            "Microsoft.Web/sites/config",
            "2024-04-01",
        )

    def test_role_problems_are_reported(self) -> None:
        """A wrong role id or principal type leaves a required role unreported as present."""
        source = """
var roles = {
  owner: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}
resource st 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: 'st'
}
resource ra 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid('x')
  scope: st
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.owner)
    principalId: 'p'
    principalType: 'User'
  }
}
"""
        assignments = BicepFile(Path("rbac.bicep"), source).role_assignments()
        assert [(a.scope_type, a.role_definition_id) for a in assignments] == [
            (STORAGE_ACCOUNT, "ba92f5b4-2d11-453d-a403-e96b0029c9fe")
        ]
        problems = role_problems(assignments)
        assert len([p for p in problems if p.startswith("no ")]) == len(REQUIRED_ROLES)
        assert any("principalType" in p for p in problems)

    def test_object_keys_are_followed_through_modules(self, tmp_path: Path) -> None:
        """Keys come through variables, module parameters, union() and both branches of a ternary."""
        main = """
param flag bool
var extra = {
  FROM_VAR: 'v'
}
module app 'app.bicep' = {
  name: 'app'
  params: {
    settings: union(extra, flag ? { IF_TRUE: '1' } : { IF_FALSE: '0' })
  }
}
"""
        module = """
param settings object
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'x'
}
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: union(settings, {
    LITERAL: 'l'
  })
}
"""
        keys = set(_project(tmp_path, main, {"app.bicep": module}).app_settings())
        assert keys == {"FROM_VAR", "IF_TRUE", "IF_FALSE", "LITERAL"}

    def test_unreadable_app_settings_raise(self, tmp_path: Path) -> None:
        """Settings built by an expression the reader does not know raise instead of coming back empty."""
        main = """
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'x'
}
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: toObject(items, i => i.name, i => i.value)
}
"""
        with pytest.raises(BicepError, match="cannot list the keys"):
            _project(tmp_path, main).app_settings()

    def test_missing_app_settings_raise(self, tmp_path: Path) -> None:
        """A template without any function app settings is an error, not an empty set."""
        with pytest.raises(BicepError, match="no function app settings"):
            _project(tmp_path, "param x string\n").app_settings()

    def test_signing_key_problems_are_reported(self, tmp_path: Path) -> None:
        """A non-secure hop, a default value, no azd mapping and an output exposing the key are all reported."""
        main = """
@secure()
param keys string = 'not-so-secret-default'
module app 'app.bicep' = {
  name: 'app'
  params: {
    keys: keys
  }
}
output LEAK string = keys
"""
        module = """
param keys string
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'x'
}
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    HOOKFLOW_SIGNING_KEYS: keys
  }
}
"""
        project = _project(tmp_path, main, {"app.bicep": module})
        parameters = tmp_path / "main.parameters.json"
        parameters.write_text('{"parameters": {}}', encoding="utf-8")
        joined = "\n".join(signing_key_problems(project, parameters))
        assert "app.bicep" in joined
        assert "is not @secure()" in joined
        assert "has a default" in joined
        assert "does not map 'keys'" in joined
        assert "output LEAK exposes" in joined


class TestChecksFailOnBadSettingsAndFiles:
    """The settings agreement, the secret scan and the package checks report what they should."""

    def test_agreement_reports_missing_unknown_and_out_of_scope(self) -> None:
        """A new SettingSpec absent from both sources, a stray key and a local-only key in Azure are reported."""
        specs = [
            SettingSpec("HOOKFLOW_NEW", "x", "both"),
            SettingSpec("AzureWebJobsStorage", None, "local", secret=True),
            SettingSpec("HOOKFLOW_AZURE_ONLY", None, "azure"),
        ]
        local = {"AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME", "HOOKFLOW_TYPO"}
        azure = {"AzureWebJobsStorage", "HOOKFLOW_AZURE_ONLY", "FUNCTIONS_WORKER_RUNTIME"}
        joined = "\n".join(agreement_problems(specs, local, azure))
        assert "HOOKFLOW_NEW (scope 'both') is missing from local.settings.sample.json" in joined
        assert "HOOKFLOW_NEW (scope 'both') is missing from the Bicep app settings" in joined
        assert "AzureWebJobsStorage (scope 'local') must not be set in the Bicep app settings" in joined
        assert "sets HOOKFLOW_TYPO" in joined
        assert "the Bicep app settings sets host setting FUNCTIONS_WORKER_RUNTIME" in joined
        assert agreement_problems(specs[1:], {"AzureWebJobsStorage"}, {"HOOKFLOW_AZURE_ONLY"}) == []

    def test_agreement_follows_settings_as_they_grow(self, tmp_path: Path) -> None:
        """A setting added to SETTINGS but not to the Bicep makes the real comparison fail."""
        main = """
resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: 'x'
}
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    HOOKFLOW_TABLE_PREFIX: 'hookflow'
  }
}
"""
        azure = set(_project(tmp_path, main).app_settings())
        grown = [*SETTINGS, SettingSpec("HOOKFLOW_MAX_WAIT", "P7D", "both")]
        local = {spec.name for spec in grown if spec.scope != "azure"}
        problems = agreement_problems(grown, local, azure)
        assert any(p.startswith("HOOKFLOW_MAX_WAIT") and "Bicep" in p for p in problems)
        assert not any(p.startswith("HOOKFLOW_MAX_WAIT") and "local.settings" in p for p in problems)

    @pytest.mark.parametrize(
        ("name", "text", "what"),
        [
            (
                "a.py",
                "conn = 'DefaultEndpointsProtocol=https;AccountName=x;Account" + "Key=" + "A" * 43 + "=='",
                "account key",
            ),
            ("a.txt", "Endpoint=sb://x/;SharedAccess" + "Signature=" + "sr%3Dabc%26sig%3D" + "x" * 20, "shared access"),
            ("a.md", "https://x.blob.core.windows.net/c?sv=2022&s" + "ig=" + "AbCd%2B" * 6, "SAS signature"),
            ("key.txt", "-----" + "BEGIN RSA PRIVATE KEY" + "-----\nMIIB", "PEM block"),
            ("local.settings.json", '{"HOOKFLOW_SIGNING_KEYS": "' + "k" * 32 + '"}', "literal value"),
            ("main.bicep", "var s = {\n  HOOKFLOW_SIGNING_KEYS: '" + "k" * 32 + "'\n}", "literal value"),
            ("ci.yml", "env:\n  HOOKFLOW_SIGNING_KEYS: " + "k" * 32 + "\n", "literal value"),
            (".env", "HOOKFLOW_SIGNING_KEYS=" + "k" * 32 + "\n", "literal value"),
        ],
    )
    def test_scan_reports_secret_literals(self, name: str, text: str, what: str) -> None:
        """Each kind of secret literal is reported with its file and line."""
        problems = scan_text(name, text)
        assert any(what in p for p in problems), problems
        assert all(p.startswith(f"{name}:") for p in problems)

    @pytest.mark.parametrize(
        ("name", "text"),
        [
            ("local.settings.sample.json", '{"Values": {"HOOKFLOW_SIGNING_KEYS": ""}}'),
            ("main.parameters.json", '{"signingKeys": {"value": "${HOOKFLOW_SIGNING_KEYS}"}}'),
            ("api.bicep", "properties: {\n  HOOKFLOW_SIGNING_KEYS: signingKeys\n}"),
            ("ci.yml", "env:\n  HOOKFLOW_SIGNING_KEYS: ${{ secrets.HOOKFLOW_SIGNING_KEYS }}\n"),
            ("docker.yml", "HOOKFLOW_SIGNING_KEYS: ''\n"),
            ("azurite.py", "AccountName=" + PUBLIC_ACCOUNT + ";Account" + "Key=" + "Eby8" * 20),
            ("README.md", "HOOKFLOW_SIGNING_KEYS=<new-key>,<old-key>"),
        ],
    )
    def test_scan_accepts_references_and_empty_values(self, name: str, text: str) -> None:
        """Placeholders, empty values, secure parameters and the public emulator key are not secrets."""
        assert scan_text(name, text) == []

    def test_funcignore_problems_are_reported(self) -> None:
        """Missing exclusions and exclusions that would drop the app are both reported."""
        problems = funcignore_problems(["tests", "shared/"], ["tests/x.py", "infra/main.bicep"], ["shared/settings.py"])
        assert problems == [
            ".funcignore does not exclude infra/main.bicep",
            ".funcignore excludes shared/settings.py, which the app needs",
        ]

    def test_simple_yaml_reader(self) -> None:
        """The azure.yaml reader nests mappings by indentation and ignores comments."""
        text = "# c\nname: x\nservices:\n  api:\n    project: . # here\n    host: function\nother: 'y'\n"
        assert read_simple_yaml(text) == {
            "name": "x",
            "services": {"api": {"project": ".", "host": "function"}},
            "other": "y",
        }
