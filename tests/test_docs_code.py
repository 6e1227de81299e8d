"""The docs name what the code has: docs/architecture.md's module map is the package, and
every host URI in an example of README.md or docs/ is one the driver registry takes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from migrator.drivers import registry
from migrator.errors import InvalidURI
from tests.conftest import ROOT
from tests.test_docs import DOCS, fenced_blocks, section

PACKAGE = ROOT / "migrator"
ARCHITECTURE = DOCS / "architecture.md"


def _modules() -> set[str]:
    """Every module of the package, as a path under ``migrator/`` (``engine/run.py``)."""
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}


def _children(package: str) -> set[str]:
    """The modules (``name``) and packages (``name/``) right under ``package`` ("" is the
    top), ``__init__`` and ``__main__`` left out."""
    base = PACKAGE / package
    modules = {p.stem for p in base.glob("*.py") if not p.stem.startswith("__")}
    packages = {f"{p.name}/" for p in base.iterdir() if (p / "__init__.py").is_file()}
    return modules | packages


def _map_rows() -> dict[str, list[str]]:
    """The module map's table: {package ("" or ``engine/flows/``): [module file names]}."""
    rows = re.findall(
        r"^\| `migrator/([\w/]*)` \| ([^|]*) \|",
        section(ARCHITECTURE.read_text(), "## The module map"),
        re.M,
    )
    assert rows, "docs/architecture.md has no module map"
    return {package: re.findall(r"`([\w.]+)`", names) for package, names in rows}


def _boxes() -> dict[str, tuple[str, list[str]]]:
    """The layers diagram: {box: (its package, or "" for a layer of top-level modules,
    [the names it lists])}."""
    [diagram] = fenced_blocks(ARCHITECTURE.read_text(), "mermaid")
    boxes = re.findall(r'^\s+(\w+)\["([\w/]*?)/?<br/>([^"]*)"\]', diagram, re.M)
    parsed = {}
    for box, head, body in boxes:
        package = f"{head}/" if (PACKAGE / head).is_dir() else ""
        names = [] if package == "cli/" else [n.strip() for n in body.split("·")]
        parsed[box] = (package, names)
    return parsed


def test_the_module_map_lists_every_module_and_only_modules_that_exist() -> None:
    listed = {f"{package}{name}" for package, names in _map_rows().items() for name in names}
    required = {m for m in _modules() if not m.endswith("__init__.py")}
    assert sorted(required - listed) == [], "modules missing from docs/architecture.md's map"
    assert sorted(listed - _modules()) == [], "docs/architecture.md's map names no such module"


def test_each_layer_box_names_exactly_what_its_package_holds() -> None:
    for box, (package, names) in _boxes().items():
        if package in ("", "cli/"):
            continue
        assert sorted(names) == sorted(_children(package)), box


def test_the_top_level_boxes_together_name_every_top_level_module_once() -> None:
    boxes = _boxes()
    top = [name for package, names in boxes.values() if package == "" for name in names]
    packages = [package for package, _ in boxes.values() if package]
    assert len(top) == len(set(top))
    assert sorted(top + packages) == sorted(_children(""))


def test_the_tools_and_core_boxes_are_the_import_contracts_layers() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [layers] = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"
    ]
    contract = {
        frozenset(n.strip().rstrip("/") for n in re.split("[:|]", layer)) for layer in layers
    }
    boxes = _boxes()
    for box in ("tools", "core"):
        assert frozenset(n.rstrip("/") for n in boxes[box][1]) in contract, box


# -- host URIs in the examples --------------------------------------------------------------

URI = re.compile(r"\b([a-z][a-z0-9+.-]*)://[^\s'\"`<>)\]]*")


def _is_host_uri(scheme: str, uri: str) -> bool:
    """Whether ``uri`` names a host: a registered scheme (or any ``qemu…`` one) with
    something after ``://``; not a test host's data address (``test://DIR?incoming=ID``,
    what its Prepare returns, shown in ``show``'s output: docs/drivers.md)."""
    if not (scheme in registry.schemes() or scheme.startswith("qemu")):
        return False
    return not uri.endswith("://") and "?incoming=" not in uri


def _example_uris() -> list[tuple[str, str]]:
    """(page, URI) for every host URI in a fenced block of README.md and docs/*.md, except
    those shown being refused: the block quotes the error ``invalid host URI 'URI'``."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in fenced_blocks(page.read_text()):
            for match in URI.finditer(block):
                uri = match.group(0).rstrip(".,;:")
                refused = f"invalid host URI '{uri}'" in block
                if _is_host_uri(match.group(1), uri) and not refused:
                    found.append((page.name, uri))
    return sorted(set(found))


EXAMPLES = _example_uris()


def test_the_examples_have_host_uris_of_every_kind() -> None:
    schemes = {uri.partition("://")[0] for _page, uri in EXAMPLES}
    assert {"test", "qmp", "qemu+tcp", "qemu+unix"} <= schemes


@pytest.mark.parametrize(("page", "uri"), EXAMPLES, ids=[f"{p}:{u}" for p, u in EXAMPLES])
def test_every_host_uri_in_an_example_is_taken_by_the_registry(page: str, uri: str) -> None:
    """The driver is built from the URI, as every command does first; building one only
    parses its URI (nothing connects: docs/drivers.md, "Third-party drivers")."""
    try:
        registry.connect(uri)
    except InvalidURI as exc:
        pytest.fail(f"{page}: {exc}")


def test_a_refused_example_uri_would_be_caught(tmp_path: Path) -> None:
    """The check above fails on the URIs the commands refuse."""
    refused = "qemu+ssh://a/system?mode=direct"
    with pytest.raises(InvalidURI):
        registry.connect(refused)
    page = tmp_path / "page.md"
    page.write_text(f"```sh\nmigrator submit vm1 --src {refused}\n```\n")
    [block] = fenced_blocks(page.read_text())
    assert [m.group(0) for m in URI.finditer(block)] == [refused]
