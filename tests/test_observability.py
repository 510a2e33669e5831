"""The alert rules, their promtool tests, the Grafana dashboard and the runbook agree with the code.

Every metric and label that a rule or a panel uses must be one the dataflow or the API exports: the
names come from Prometheus's registry after importing the two processes' entry points, so renaming
a metric in the code breaks these tests. docker-compose.yml cannot run here (no Docker engine): its
Prometheus and Grafana services are checked against the files they mount.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "atp.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "atp.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
COMPOSE = ROOT / "docker-compose.yml"

# Series Prometheus adds itself; labels every scraped series carries.
SYNTHETIC = {"up": set()}
TARGET_LABELS = {"job", "instance"}


# ---------------------------------------------------------------- what the files hold

def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables) of every query of the dashboard."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def grafana_to_promql(expr: str, rate: str = "1m", range_: str = "15m") -> str:
    """Grafana's interval variables replaced by fixed windows, as Grafana does before it asks Prometheus."""
    return (expr.replace("$__rate_interval", rate).replace("$__interval", rate).replace("$__range", range_))


def runbook_anchors() -> set[str]:
    """GitHub's heading anchors (the slug tests/test_docs.py checks links with)."""
    heads = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


# ---------------------------------------------------------------- PromQL, as far as names and labels go

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric name, {label: matched value}) of every vector selector in ``expr``."""
    found: list[tuple[str, dict[str, str]]] = []

    def keep(m: re.Match[str]) -> str:
        matchers = {k: v for k, _, v in _MATCHER.findall(m.group(2))}
        name = m.group(1) or matchers.get("__name__", "")
        found.append((name, matchers))
        return " "

    rest = _SELECTOR.sub(keep, expr)
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # range and subquery windows
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', " ", rest)  # string arguments
    rest = re.sub(r"\boffset\s+\w+", " ", rest)
    for name in _IDENT.findall(rest):
        if name.lower() not in _KEYWORDS:
            found.append((name, {}))
    return found


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for _, labels in _GROUPING.findall(expr) for label in labels.split(",") if label.strip()}


@cache
def exported() -> dict[str, frozenset[str]]:
    """Every series name the dataflow and the API export -> its label names (besides job and instance).

    Counters add ``_total`` (and ``_created`` when prometheus_client's own), histograms ``_bucket``,
    ``_sum`` and ``_count`` (and ``_created``); a labelled metric is known before its first sample."""
    from prometheus_client import REGISTRY
    from prometheus_client import metrics as client_metrics

    import dataflows.runtime.run  # noqa: F401 - what `atp run` imports registers the dataflow's metrics
    import serving.main  # noqa: F401 - and `atp serve` the API's

    created = getattr(client_metrics, "_use_created", True)
    out: dict[str, set[str]] = {name: set(labels) for name, labels in SYNTHETIC.items()}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registry has no public listing
        own = isinstance(collector, client_metrics.MetricWrapperBase)
        declared = set(getattr(collector, "_labelnames", None) or getattr(collector, "_labels", None) or ())
        for family in collector.collect():
            names = {s.name: set(s.labels) for s in family.samples}
            if family.type == "counter":
                names.setdefault(family.name + "_total", set())
                if own and created:
                    names.setdefault(family.name + "_created", set())
            elif family.type == "histogram":
                names.setdefault(family.name + "_bucket", set()).add("le")
                names.setdefault(family.name + "_sum", set())
                names.setdefault(family.name + "_count", set())
                if own and created:
                    names.setdefault(family.name + "_created", set())
            else:
                names.setdefault(family.name, set())
            for name, labels in names.items():
                out.setdefault(name, set()).update(labels | declared)
    return {name: frozenset(labels) for name, labels in out.items()}


def problems(expr: str) -> list[str]:
    """Names the code does not export, and labels those metrics do not have, in ``expr``."""
    known = exported()
    found, labels_in_expr = [], set(TARGET_LABELS)
    for name, matchers in selectors(expr):
        if name not in known:
            found.append(f"unknown metric {name!r}")
            continue
        labels_in_expr |= known[name]
        for label in set(matchers) - known[name] - TARGET_LABELS - {"__name__"}:
            found.append(f"{name} has no label {label!r}")
    for label in grouping_labels(expr) - labels_in_expr:
        found.append(f"no metric of the expression has the label {label!r}")
    return found


def metric_names(expr: str) -> set[str]:
    return {name for name, _ in selectors(expr)}


# ---------------------------------------------------------------- promtool

def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make bootstrap` installs Debian's prometheus package")
    return subprocess.run([promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules():
    out = _promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    out = _promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_checks_the_compose_prometheus_config_and_finds_the_rules(tmp_path):
    """As the compose service sees it: the rules beside the config, the API token file in place."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    token = tmp_path / "token"
    token.write_text("atp_example\n")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            assert job["authorization"]["credentials_file"] == "/etc/prometheus/secrets/prometheus"
            job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "alerts.yml").write_text(RULES.read_text())
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout


def test_every_rule_has_a_case_where_it_fires_and_one_where_it_must_not():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']}: no case where it must not fire"


# ---------------------------------------------------------------- rules and runbook

def test_every_rule_has_a_severity_a_summary_a_description_and_its_runbook_section():
    anchors = runbook_anchors()
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)), "two rules share a name"
    urls = set()
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), rule["alert"]
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/runbook.md" and anchor in anchors, (rule["alert"], notes["runbook_url"])
        urls.add(notes["runbook_url"])
    assert len(urls) == len(names), "each alert has its own runbook section"


def test_the_runbook_names_no_alert_that_does_not_exist():
    named = set(re.findall(r"\*\*Alert\*\* `(\w+)`", RUNBOOK.read_text()))
    assert named == {rule["alert"] for rule in rules()}


def test_rules_use_only_metrics_and_labels_the_code_exports():
    bad = {rule["alert"]: p for rule in rules() if (p := problems(rule["expr"]))}
    assert not bad, bad


def test_annotations_only_name_labels_the_rule_can_have():
    for rule in rules():
        labels = set(TARGET_LABELS) | set(rule["labels"])
        for name in metric_names(rule["expr"]):
            labels |= exported()[name]
        used = set(re.findall(r"\$labels\.(\w+)", json.dumps(rule["annotations"])))
        assert used <= labels, (rule["alert"], used - labels)


def test_rules_name_only_jobs_that_prometheus_scrapes():
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    named = {v for rule in rules() for _, m in selectors(rule["expr"]) for k, v in m.items() if k == "job"}
    assert named and named <= jobs, named - jobs


# ---------------------------------------------------------------- dashboard

def test_dashboard_queries_use_only_metrics_and_labels_the_code_exports():
    bad = {f"{title}: {expr}": p for title, expr in panel_queries() if (p := problems(expr))}
    assert not bad, bad


def test_the_checker_catches_a_renamed_metric_or_label():
    """What happens when the code renames a metric a rule uses (the check must be able to fail)."""
    expr = next(rule["expr"] for rule in rules() if rule["alert"] == "AtpDeadLetters")
    assert problems(expr) == []
    renamed = expr.replace("atp_dead_letter_total", "atp_dead_letters_total")
    assert "unknown metric 'atp_dead_letters_total'" in problems(renamed)
    assert "no metric of the expression has the label 'cause'" in problems(expr.replace("reason", "cause"))
    drift = next(rule["expr"] for rule in rules() if rule["alert"] == "AtpDriftCritical")
    assert "atp_drift_alerts_created has no label 'level'" in problems(drift.replace("severity=", "level="))
    assert problems("sum by (sku) (rate(atp_events_total[5m]))") == [
        "no metric of the expression has the label 'sku'"]


def test_the_dashboard_covers_the_business_and_the_plumbing():
    used = {name for _, expr in panel_queries() for name in metric_names(expr)}
    for name in ("atp_events_total", "bytewax_kafka_consumer_lag", "atp_event_lag_seconds_bucket",
                 "atp_dead_letter_total", "atp_oversold_positions", "atp_drift_alerts_total",
                 "atp_reconciliations_total", "atp_redis_write_seconds_bucket", "atp_api_requests_total",
                 "atp_api_request_seconds_bucket", "atp_replay_lag_events", "atp_replay_events_total",
                 "atp_keyspace_lost_total"):
        assert name in used, name
    titles = [p["title"] for p in panels()]
    assert titles.index("Oversold positions") < titles.index("Redis write latency per batch"), "business first"


def test_the_dashboard_is_well_formed_and_reads_the_provisioned_data_source():
    board = dashboard()
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == uid and p["description"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid and t["expr"].strip(), p["title"]


# ---------------------------------------------------------------- docker-compose.yml

@cache
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


COMPOSE_VOLUMES = set(yaml.safe_load((ROOT / "docker-compose.yml").read_text()).get("volumes") or {})


def mounts(service: str) -> dict[str, tuple[Path, str]]:
    """Container path -> (host path, mode) of a service's bind mounts (named volumes left out)."""
    out = {}
    for volume in services()[service].get("volumes", []):
        host, container, *mode = volume.split(":")
        if not host.startswith(("./", "/")):
            assert host in COMPOSE_VOLUMES, f"{service}: {volume} is neither a repository file nor a named volume"
            continue
        assert host.startswith("./"), f"{service}: {volume} is not a file of the repository"
        out[container] = (ROOT / host, mode[0] if mode else "rw")
    return out


def test_compose_prometheus_mounts_the_rules_where_its_config_loads_them():
    m = mounts("prometheus")
    config_host, _ = m["/etc/prometheus/prometheus.yml"]
    assert config_host.resolve() == PROMETHEUS_CONFIG.resolve()
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        in_container = str(Path("/etc/prometheus") / rule_file)  # relative to the config file
        assert in_container in m, f"{rule_file} is not mounted at {in_container}"
        assert m[in_container][0].resolve() == RULES.resolve()
        assert (PROMETHEUS_CONFIG.parent / rule_file).resolve() == RULES.resolve()  # and in the repository
    assert all(mode == "ro" for _, mode in m.values())


def test_compose_grafana_is_pinned_local_and_provisioned_read_only():
    grafana = services()["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana-oss" and re.fullmatch(r"\d+\.\d+\.\d+", tag), grafana["image"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    m = mounts("grafana")
    assert m, "grafana mounts nothing"
    for container, (host, mode) in m.items():
        assert host.exists() and mode == "ro", (container, host, mode)
    assert m["/etc/grafana/provisioning/datasources"][0] == DATASOURCES.parent
    assert m["/etc/grafana/provisioning/dashboards"][0] == DASHBOARD_PROVIDERS.parent
    provider = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"][0]
    assert m[provider["options"]["path"]][0] == DASHBOARD.parent
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_compose_grafana_takes_its_admin_password_from_the_environment_only():
    env = services()["grafana"]["environment"]
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), "no default secret in the file"
    assert not any(k.endswith("__FILE") or "PASSWORD" in k for k in env if k != "GF_SECURITY_ADMIN_PASSWORD")
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false" and env.get("GF_USERS_ALLOW_SIGN_UP") == "false"


def test_grafana_data_source_is_the_compose_prometheus():
    source = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert source["type"] == "prometheus"
    host_port = source["url"].removeprefix("http://")
    host, _, port = host_port.partition(":")
    assert host in services() and host == "prometheus"
    assert any(p.endswith(f":{port}") for p in services()["prometheus"]["ports"])
    assert "grafana" not in services()["prometheus"].get("depends_on", [])
