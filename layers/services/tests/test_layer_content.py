"""Consistency of the template's files: names, ports and wiring agree everywhere."""

import configparser
import json
import re
import tomllib

import pytest
from conftest import LAYERS

# Every template of the project (templates/*.toml) stacks these layers.
TEMPLATES = sorted((LAYERS.parent / "templates").glob("*.toml"))

SERVICES = {"broker-gateway": 8001, "intelligent-core": 8002, "event-bus": 8003,
            "monitoring": 8004, "frontend": 8005}


def unit(path):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(path.read_text())
    return cp


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_every_service_has_unit_env_venv_queue_and_check(template):
    tpl = tomllib.loads(template.read_text())
    venvs = tomllib.loads((LAYERS / "services-venvs/layer.toml").read_text())["venvs"]
    defs = json.loads((LAYERS / "rabbitmq-config/root/etc/rabbitmq/definitions.json").read_text())
    queues = {q["name"]: q for q in defs["queues"]}
    links = tomllib.loads((LAYERS / "services/layer.toml").read_text())["symlinks"]
    for svc, port in SERVICES.items():
        u = unit(LAYERS / f"services/root/usr/lib/systemd/system/stock-analysis-{svc}.service")
        assert u["Service"]["ExecStart"].startswith(f"/opt/stock-analysis/venvs/{svc}/bin/python ")
        assert f"/etc/stock-analysis/{svc}.env" in u["Service"]["EnvironmentFile"]
        assert u["Service"]["User"] == "stock-analysis"
        assert "stock-analysis-firstboot.service" in u["Unit"]["After"]
        env = (LAYERS / f"services/root/etc/stock-analysis/{svc}.env").read_text()
        assert f"SA_SERVICE={svc}\n" in env and f"SA_PORT={port}\n" in env
        assert venvs[svc]["path"] == f"/opt/stock-analysis/venvs/{svc}"
        assert (LAYERS / "services-venvs" / venvs[svc]["requirements"]).is_file()
        q = queues[f"{svc}-events"]
        assert q["durable"] and q["arguments"]["x-dead-letter-exchange"] == "stock-analysis-dlx"
        assert f"{svc}-events.dlq" in queues
        assert any(c.get("http") == f"http://127.0.0.1:{port}/health" for c in tpl["checks"])
        assert f"etc/systemd/system/multi-user.target.wants/stock-analysis-{svc}.service" in links


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_stack_order_respects_requires(template):
    tpl = tomllib.loads(template.read_text())
    seen = set()
    for name in tpl["layers"]:
        layer = tomllib.loads((LAYERS / name / "layer.toml").read_text())
        for req in layer.get("requires", []):
            assert req in seen, f"{name} requires {req}, which is not below it"
        seen.add(name)
    # postgresql-preseed must be under the package that would create a cluster.
    assert tpl["layers"].index("postgresql-preseed") < tpl["layers"].index("postgresql")


def test_definitions_hold_no_users_or_passwords():
    defs = json.loads((LAYERS / "rabbitmq-config/root/etc/rabbitmq/definitions.json").read_text())
    assert not defs.get("users") and not defs.get("permissions")
    assert "password" not in json.dumps(defs).lower()


def test_no_secret_in_any_layer_file():
    pattern = re.compile(r"(changeme|requirepass\s+[A-Za-z0-9]{8,}|PASSWORD\s*=\s*['\"]?\w{6,}|BEGIN [A-Z ]*PRIVATE KEY)")
    for f in LAYERS.rglob("*"):
        if f.is_file() and "tests" not in f.parts and f.suffix not in {".pyc"}:
            text = f.read_text(errors="replace")
            for m in pattern.finditer(text):
                raise AssertionError(f"{f.relative_to(LAYERS)}: looks like a secret: {m.group(0)!r}")


def test_firstboot_steps_are_numbered_and_use_the_helpers():
    steps = sorted(LAYERS.glob("*/root/usr/lib/stock-analysis/firstboot.d/*.sh"), key=lambda p: p.name)
    names = [s.name for s in steps]
    assert names == sorted(names) and len(set(n[:2] for n in names)) == len(names)
    assert [n[:2] for n in names] == ["10", "20", "30", "40"]
    for s in steps:
        assert ". /usr/lib/stock-analysis/firstboot-lib.sh" in s.read_text()
