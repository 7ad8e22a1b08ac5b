"""The README's commands run as written, without running the heavy ones: every ``make`` target it names exists,
every ``metareward`` command line parses with the CLI's own parser (and a ``run`` line's recipe and overrides load
into a RunConfig), every recipe, repository path and config key it names exists, every deployment it triggers is
in deployments/prefect.yaml, every relative link of the README and of docs/ resolves, and the README stays a page
a newcomer reads in ten minutes (at most MAX_LINES lines)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml
from typer.exceptions import TyperException

from flows.cli import app
from metareward import config_reference
from metareward.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_LINES = 320
SHELL = ("bash", "sh", "shell", "console")
# Files the README names that a command writes rather than the repository holds (each is in .gitignore).
GENERATED = {"bench/results.json": "make bench"}
# Top-level folders of the repository: a path starting with one of them is a repository path and must exist.
REPO_DIRS = ("metareward", "flows", "tasks", "docs", "docker", "deployments", "bench", "tests", ".ci")


def shell_lines(text: str) -> list[str]:
    """The command lines of the fenced shell blocks, a backslash-continued line joined to the next."""
    out = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang in SHELL:
            out += [ln.strip() for ln in body.replace("\\\n", " ").splitlines() if ln.strip()]
    return out


def commands(text: str) -> list[list[str]]:
    """Each shell line as its words: comments, a trailing ``&`` and leading ``VAR=value`` assignments dropped; a
    program named by its path (``.venv/bin/metareward``) by its name."""
    out = []
    for line in shell_lines(text):
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
            words = words[1:]
        if words and words[-1] == "&":
            words = words[:-1]
        if words:
            out.append([words[0].rsplit("/", 1)[-1], *words[1:]])
    return out


def test_the_shell_lines_are_read_as_a_shell_would():
    text = ("```bash\nA=1 B=2 .venv/bin/metareward run smoke dpo.beta=0.2   # a comment\nprefect server start &\n"
            "make x \\\n  y\n```\n```\nnot shell\n```\n")
    assert commands(text) == [["metareward", "run", "smoke", "dpo.beta=0.2"], ["prefect", "server", "start"],
                              ["make", "x", "y"]]


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


@pytest.fixture(scope="module")
def cli():
    """The metareward command as typer builds it (its own click: groups have ``get_command``)."""
    return typer.main.get_command(app)


def test_the_readme_is_a_short_guide(readme):
    assert len(readme.splitlines()) <= MAX_LINES, "move reference material to docs/"
    assert "config-reference:begin" not in readme  # the generated reference lives in docs/configuration.md
    assert "\n## Layout\n" not in readme  # docs/layout.md (tests/test_docs_layout.py)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([A-Za-z0-9_.\- ]+):(?!=)", text, re.M) for t in line.split()}


def test_every_make_target_exists(readme):
    named = {c[1] for c in commands(readme) if c[0] == "make" and len(c) > 1}
    named |= set(re.findall(r"`make ([a-z][\w-]*)", readme))
    assert "run" in named and "test" in named
    assert sorted(named - make_targets()) == []


def parse(cli, words: list[str]):
    """Parse ``metareward WORDS`` as the CLI would, invoking nothing: sub-commands resolved group by group, then
    the command's own arguments and options checked (a missing one, an unknown option or a bad value raises
    a UsageError). ``--help`` only needs the command to exist."""
    words = [w for w in words if w != "--debug"]  # metareward.cli.main takes it out before parsing
    cmd, path = cli, ["metareward"]
    while hasattr(cmd, "get_command") and words and not words[0].startswith("-"):
        sub = cmd.get_command(None, words[0])
        assert sub is not None, f"{' '.join(path)}: no command {words[0]!r}"
        cmd, path, words = sub, [*path, words[0]], words[1:]
    if "--help" not in words:
        cmd.make_context(" ".join(path), list(words))
    return cmd


def test_the_parser_rejects_what_the_cli_rejects(cli):
    assert parse(cli, ["run", "smoke", "dpo.beta=0.2", "--no-progress"]).name == "run"
    assert parse(cli, ["eval", "mt-bench", "--help"]).name == "mt-bench"
    for bad in (["runn", "smoke"], ["status"], ["run", "smoke", "--fast"], ["eval", "alpaca"]):
        with pytest.raises((AssertionError, TyperException)):
            parse(cli, bad)


def metareward_lines(text: str) -> list[list[str]]:
    return [c[1:] for c in commands(text) if c[0] == "metareward"]


def test_every_metareward_command_parses(readme, cli):
    lines = metareward_lines(readme)
    assert {w[0] for w in lines} >= {"run", "status", "resume", "report", "eval"}
    for words in lines:
        parse(cli, words)


def _recipe_and_overrides(words: list[str]) -> tuple[str, list[str]]:
    args = [w for w in words[1:] if not w.startswith("-")]
    return args[0], args[1:]


def test_every_recipe_named_is_shipped(readme):
    shipped = {p.stem for p in (ROOT / "metareward" / "configs").glob("*.yaml")}
    named = {_recipe_and_overrides(w)[0] for w in metareward_lines(readme) if w[0] == "run"}
    recipes = {r for r in named if not r.endswith((".yaml", ".yml"))}  # a .yaml is the user's own file
    assert recipes and sorted(recipes - shipped) == []
    table = set(re.findall(r"^\| `([\w-]+)` \|", readme, re.M))  # the recipe table lists every shipped recipe
    assert table == shipped


def test_every_run_line_loads_into_a_run_config(readme):
    """The overrides are real keys with valid values; a user's own YAML file is stood in for by `smoke`."""
    for words in metareward_lines(readme):
        if words[0] == "run":
            recipe, overrides = _recipe_and_overrides(words)
            load_config("smoke" if recipe.endswith((".yaml", ".yml")) else recipe, overrides)


def config_keys() -> set[str]:
    return {key for key, *_ in config_reference._fields(RunConfig, "")}


def named_keys(text: str) -> set[str]:
    """Config keys the text gives a value (``a.b=value``, anywhere) or names in backticks (`section.key`, a
    section of RunConfig first; `health.*` names the section)."""
    sections = "|".join(RunConfig.model_fields)
    given = set(re.findall(rf"(?<![\w./-])((?:{sections})\.[\w.]+)=", text))
    quoted = set(re.findall(rf"`((?:{sections})\.[\w.*]+)`", text))
    return given | quoted


def test_every_config_key_is_a_field(readme):
    keys = config_keys()
    prefixes = {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
    for doc in (README, *DOCS):
        named = named_keys(doc.read_text())
        bad = [k for k in named if k not in keys and k.removesuffix(".*") not in prefixes]
        assert sorted(bad) == [], doc.name
    assert {"dpo.beta", "pairs.rho", "actor.k", "judge.n"} <= named_keys(readme)


def repo_paths(text: str) -> set[str]:
    """Repository paths the text names (in code or prose): a top-level folder of the repository, then more of a
    path; placeholders (``<run>``, ``*``) and URLs are left out."""
    found = set(re.findall(rf"(?<![\w./:-])((?:{'|'.join(map(re.escape, REPO_DIRS))})/[\w./-]*)", text))
    return {p.rstrip(".") for p in found if not re.search(r"[<*]", p)}


def test_every_repository_path_named_exists(readme):
    named = repo_paths(readme)
    assert "metareward/configs/" in named and "docs/configuration.md" in named
    missing = [p for p in named if not (ROOT / p).exists() and p not in GENERATED]
    assert sorted(missing) == []


def test_every_relative_link_resolves():
    for doc in (README, *DOCS):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: {target}"


def test_the_readme_links_every_doc(readme):
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    assert linked == {f"docs/{d.name}" for d in DOCS}


def test_every_deployment_triggered_exists(readme):
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    flows = {}
    for d in spec["deployments"]:
        file, fn = d["entrypoint"].split(":")
        name = re.search(rf"@flow\(name=\"([\w-]+)\"[^\n]*\)\ndef {fn}\(", (ROOT / file).read_text())[1]
        flows.setdefault(name, set()).add(d["name"])
    triggered = [next(w for w in c[3:] if not w.startswith("-")) for c in commands(readme)
                 if c[:3] == ["prefect", "deployment", "run"]]
    assert triggered
    for full in triggered:
        flow, deployment = full.split("/")
        assert deployment in flows.get(flow, set()), full
