"""The packages stay as docs/architecture.md draws them: no cycle, imports only go down."""

from __future__ import annotations

from pathlib import Path

from tests.layers import cycles, describe_cycle, layer_violations, package_edges, read_imports


def test_no_import_cycle_between_packages() -> None:
    edges = package_edges(read_imports())
    found = cycles(edges)
    assert not found, "\n".join(describe_cycle(c, edges) for c in found)


def test_imports_only_go_down_the_layers() -> None:
    source = read_imports()
    problems = layer_violations(package_edges(source), source)
    assert not problems, "\n".join(problems)


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_finds_a_planted_cycle(tmp_path: Path) -> None:
    """The checker itself works: a cycle planted in a throw-away tree is reported by name."""
    _tree(
        tmp_path,
        {
            "cloud/__init__.py": "",
            "cloud/devices/__init__.py": "",
            "cloud/devices/models.py": "from cloud.charging.models import ChargingSession\n",
            "cloud/charging/__init__.py": "",
            "cloud/charging/models.py": "from cloud.devices import models\n",
            "cloud/ingest/__init__.py": "from cloud.devices.models import x\n",
        },
    )
    edges = package_edges(read_imports(tmp_path, ("cloud",)), ("cloud",))
    found = cycles(edges)
    assert found == [["cloud.charging", "cloud.devices"]]
    report = describe_cycle(found[0], edges)
    assert "cloud.devices -> cloud.charging (in cloud.devices.models)" in report
    assert "cloud.charging -> cloud.devices (in cloud.charging.models)" in report


def test_the_check_finds_an_upward_import_and_flask_in_a_domain(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "cloud/__init__.py": "",
            "cloud/devices/__init__.py": "",
            "cloud/devices/models.py": "import flask\nfrom cloud.api.errors import fail\n",
            "cloud/api/__init__.py": "",
            "cloud/api/errors.py": "",
        },
    )
    source = read_imports(tmp_path, ("cloud",))
    problems = layer_violations(package_edges(source, ("cloud",)), source)
    assert any("cloud.devices (domains) imports cloud.api (HTTP" in p for p in problems)
    assert any("cloud.devices.models imports flask" in p for p in problems)


def test_the_check_keeps_the_order_of_the_domains(tmp_path: Path) -> None:
    """Sideways between domains goes one way only: devices may not import charging."""
    _tree(
        tmp_path,
        {
            "cloud/__init__.py": "",
            "cloud/devices/__init__.py": "from cloud.charging import models\n",
            "cloud/charging/__init__.py": "",
            "cloud/charging/models.py": "",
        },
    )
    source = read_imports(tmp_path, ("cloud",))
    problems = layer_violations(package_edges(source, ("cloud",)), source)
    assert problems == [
        "cloud.devices imports cloud.charging, a domains package listed after it, in cloud.devices"
    ]
