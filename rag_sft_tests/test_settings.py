"""The settings have one home (`rag_sft/settings.py`): every `RAG_SFT_*` variable the code names
is declared there and every declared one is used, no module reads a declared variable by itself,
resource fields take their default and description from the declaration, and the tables of
docs/configuration.md, "Environment variables" are the ones it generates."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import dagster as dg
import pytest

from rag_sft import settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rag_sft"
VARIABLE = re.compile(r"RAG_SFT_[A-Z0-9_]*[A-Z0-9]")
DECLARED = {setting.variable: setting for setting in settings.declared()}


def modules() -> list[Path]:
    """The package's modules, the settings module left out."""
    return sorted(path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "settings.py")


def test_the_configuration_page_holds_the_generated_tables():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert settings.with_table(page) == page, (
        "docs/configuration.md's settings tables differ from rag_sft/settings.py: run "
        "`python -m rag_sft.settings --write docs/configuration.md`"
    )


def test_every_variable_the_code_names_is_declared():
    undeclared = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in modules()
        for name in VARIABLE.findall(path.read_text(encoding="utf-8"))
        if name not in DECLARED
    }
    assert not undeclared, "declare these in rag_sft/settings.py:\n" + "\n".join(sorted(undeclared))


def test_every_declared_setting_is_used():
    """Used: named as `settings.NAME` or imported from the settings module by a module of the package."""
    used: set[str] = set()
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "settings":
                used.add(node.attr)
            elif isinstance(node, ast.ImportFrom) and node.module == "rag_sft.settings":
                used |= {alias.name for alias in node.names}
    names = {name for name, value in vars(settings).items() if isinstance(value, settings.Setting)}
    assert names - used == set(), f"declared but never used: {sorted(names - used)}"


def test_no_module_reads_a_declared_variable_itself():
    """`os.environ.get("RAG_SFT_…")`, `os.getenv(…)` or `os.environ["…"]` outside the settings module
    would bypass the declaration (its default, its parser, empty meaning unset)."""
    reads = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in ("os.environ.get", "os.getenv"):
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            if isinstance(key, ast.Constant) and key.value in DECLARED:
                reads.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not reads, "read these through rag_sft/settings.py:\n" + "\n".join(reads)


def test_the_docs_and_deployment_files_name_declared_variables_only():
    """A variable named in the docs, the Makefile or deploy/ that the code does not declare is a typo
    or a setting that is gone; `RAG_SFT_PG_*` names declared ones by their prefix."""
    files = [ROOT / "README.md", ROOT / "Makefile", *(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*")]
    unknown = set()
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for match in VARIABLE.finditer(text):
            name, prefix = match.group(0), text[match.end():match.end() + 2] in ("_*", "*")
            if not (name in DECLARED or prefix and any(v.startswith(name) for v in DECLARED)):
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, "\n".join(sorted(unknown))


def test_resource_fields_take_their_default_and_description_from_the_declaration():
    from rag_sft.resources import ApiKeyFromEnv, default_resources

    resources = default_resources()
    for setting in settings.declared():
        if setting.group != settings.RESOURCES:
            continue
        key, field = setting.name.split(".")
        declared_field = type(resources[key]).model_fields[field]
        default = declared_field.default_factory()
        if isinstance(default, ApiKeyFromEnv):  # a key: the field names its variable
            assert default.env == setting.variable, setting.name
        else:
            assert declared_field.description == setting.field_description(), setting.name
            assert f"${setting.variable}" in declared_field.description


def test_a_setting_reads_the_environment_when_asked(monkeypatch):
    monkeypatch.delenv("RAG_SFT_MIN_NEW_SAMPLES", raising=False)
    assert settings.MIN_NEW_SAMPLES.value() == 1000
    monkeypatch.setenv("RAG_SFT_MIN_NEW_SAMPLES", "7")
    assert settings.MIN_NEW_SAMPLES.value() == 7
    monkeypatch.setenv("RAG_SFT_MIN_NEW_SAMPLES", "")  # set but empty: unset
    assert settings.MIN_NEW_SAMPLES.value() == 1000 and settings.MIN_NEW_SAMPLES.raw() is None
    # A secret is handed on as its variable, never its value.
    monkeypatch.setenv("RAG_SFT_STATE_URL", "postgresql+psycopg2://u:state-pw@db/state")
    value = settings.STATE_URL.value()
    assert isinstance(value, dg.EnvVar) and value.env_var_name == "RAG_SFT_STATE_URL" and "state-pw" not in repr(value)
    monkeypatch.setenv("RAG_SFT_TRAIN_ON_NAIVE_COMPLETIONS", "true")  # an opt-in is exactly 1
    assert settings.TRAIN_ON_NAIVE_COMPLETIONS.value() is False


def test_the_table_generator_refuses_a_page_without_its_markers():
    with pytest.raises(ValueError, match="markers"):
        settings.with_table("# Configuration\n")
