"""Writes grafana/dashboards/*.json: the fleet overview, the charger detail, and one dashboard
per hardware family generated from its parameter schema (one panel per telemetry parameter,
with its unit). Run it after editing this file or a family schema.

Dashboards are generated rather than hand-edited JSON so that panels stay uniform and the
queries name only metrics and fields the code really produces (tests/test_compose.py checks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parameters import FAMILIES_DIR, Family, load_family

OUT = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
PROM = {"type": "prometheus", "uid": "ampfleet-prometheus"}
INFLUX = {"type": "influxdb", "uid": "ampfleet-influxdb"}


def panel(
    title: str,
    targets: list[dict[str, Any]],
    unit: str,
    x: int,
    y: int,
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    datasource = targets[0]["datasource"]
    return {
        "type": kind,
        "title": title,
        "datasource": datasource,
        "targets": targets,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }


def prom(expr: str, legend: str = "") -> dict[str, Any]:
    return {"datasource": PROM, "expr": expr, "legendFormat": legend, "refId": "A"}


def influx(query: str, alias: str = "") -> dict[str, Any]:
    return {
        "datasource": INFLUX,
        "query": query,
        "rawQuery": True,
        "resultFormat": "time_series",
        "alias": alias,
        "refId": "A",
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid,
        "title": title,
        "tags": ["ampfleet"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
        "templating": {"list": variables or []},
    }


def fleet_overview() -> dict[str, Any]:
    return dashboard(
        "ampfleet-fleet",
        "Fleet overview",
        [
            panel(
                "Devices online", [prom("sum(ampfleet_devices_online)")], "none", 0, 0, "stat", w=6
            ),
            panel("Devices registered", [prom("sum(ampfleet_devices)")], "none", 6, 0, "stat", w=6),
            panel(
                "Samples written /s",
                [prom("sum(rate(ampfleet_samples_written_total[1m]))")],
                "ops",
                12,
                0,
                "stat",
                w=6,
            ),
            panel(
                "Spooled batches (store down)",
                [prom("sum(ampfleet_ingest_spool_batches)")],
                "none",
                18,
                0,
                "stat",
                w=6,
            ),
            panel(
                "Online by organization",
                [prom("sum by (organization) (ampfleet_devices_online)", "{{organization}}")],
                "none",
                0,
                8,
            ),
            panel(
                "Ingest rate",
                [
                    prom(
                        "sum(rate(ampfleet_messages_received_total[1m])) by (channel)",
                        "received {{channel}}",
                    ),
                    prom("sum(rate(ampfleet_samples_written_total[1m]))", "written"),
                ],
                "ops",
                12,
                8,
            ),
            panel(
                "Rejected messages and flagged values, by reason",
                [
                    prom(
                        "sum(rate(ampfleet_messages_rejected_total[5m])) by (reason)", "{{reason}}"
                    ),
                    prom(
                        "sum(rate(ampfleet_values_flagged_total[5m])) by (reason)",
                        "flagged {{reason}}",
                    ),
                ],
                "ops",
                0,
                16,
            ),
            panel(
                "Batch write latency (p95)",
                [
                    prom(
                        "histogram_quantile(0.95, sum(rate(ampfleet_batch_write_seconds_bucket"
                        "[5m])) by (le))",
                        "p95",
                    )
                ],
                "s",
                12,
                16,
            ),
            panel(
                "Ingest queue depth",
                [prom("sum(ampfleet_ingest_queue_depth)", "queued")],
                "none",
                0,
                24,
            ),
            panel(
                "Fleet power",
                [
                    influx(
                        'SELECT sum("power_w") FROM (SELECT mean("power_w") AS '
                        '"power_w" FROM "telemetry" WHERE $timeFilter GROUP BY '
                        'time($__interval), "device") GROUP BY time($__interval)',
                        "power",
                    )
                ],
                "watt",
                12,
                24,
            ),
            # Manufacturing and trust: the factory line, the PKI, quarantine and pairing.
            panel(
                "Enrollments by outcome (per hour)",
                [prom("sum(increase(ampfleet_enrollments_total[1h])) by (outcome)", "{{outcome}}")],
                "none",
                0,
                32,
            ),
            panel(
                "Certificates issued and revoked (per hour)",
                [
                    prom("sum(increase(ampfleet_certificates_issued_total[1h]))", "issued"),
                    prom(
                        "sum(increase(ampfleet_certificates_revoked_total[1h])) by (reason)",
                        "revoked {{reason}}",
                    ),
                ],
                "none",
                12,
                32,
            ),
            panel(
                "Devices in quarantine",
                [prom("max(ampfleet_devices_quarantined)")],
                "none",
                0,
                40,
                "stat",
                w=6,
            ),
            panel(
                "Swapped boards (24 h)",
                [prom("sum(increase(ampfleet_hardware_mismatches_total[24h]))")],
                "none",
                6,
                40,
                "stat",
                w=6,
            ),
            panel(
                "Pairing attempts by outcome (per hour)",
                [
                    prom(
                        "sum(increase(ampfleet_pairing_attempts_total[1h])) by (outcome)",
                        "{{outcome}}",
                    )
                ],
                "none",
                12,
                40,
            ),
        ],
    )


def charger_detail() -> dict[str, Any]:
    where = 'WHERE "device" =~ /^$device$/ AND $timeFilter GROUP BY time($__interval)'

    def series(field: str) -> dict[str, Any]:
        return influx(f'SELECT mean("{field}") FROM "telemetry" {where} fill(none)', field)

    device = {
        "name": "device",
        "type": "query",
        "datasource": INFLUX,
        "refresh": 1,
        "query": 'SHOW TAG VALUES FROM "telemetry" WITH KEY = "device"',
        "label": "Charger",
    }
    return dashboard(
        "ampfleet-charger",
        "Charger detail",
        [
            panel("Power", [series("power_w")], "watt", 0, 0),
            panel("Energy (meter register)", [series("energy_wh")], "watth", 12, 0),
            panel("Current", [series("current_a")], "amp", 0, 8),
            panel("Voltage", [series("voltage_v")], "volt", 12, 8),
            panel("Temperatures", [series("temperature_c")], "celsius", 0, 16),
            panel("Session time", [series("session_s")], "s", 12, 16),
        ],
        [device],
    )


# Parameter units (UCUM-like, as the schemas write them) -> Grafana unit ids.
GRAFANA_UNITS = {
    "W": "watt",
    "kW": "kwatt",
    "Wh": "watth",
    "kWh": "kwatth",
    "A": "amp",
    "mA": "mamp",
    "V": "volt",
    "mV": "mvolt",
    "Hz": "hertz",
    "Cel": "celsius",
    "K": "kelvin",
    "s": "s",
    "ms": "ms",
    "min": "m",
    "h": "h",
    "%": "percent",
    "dB[mW]": "dBm",
    "var": "var",
    "VA": "voltamp",
    "Ohm": "ohm",
}


def family_dashboard(family: Family) -> dict[str, Any]:
    """One panel per telemetry parameter of ``family``, in the schema's order and units."""
    panels = []
    telemetry = [p for p in family.parameters if p.kind == "telemetry" and p.value is not None]
    for index, parameter in enumerate(telemetry):
        spec = parameter.value
        assert spec is not None  # filtered above
        numeric = spec.type in ("int", "float", "duration")
        select = f'mean("{parameter.id}")' if numeric else f'last("{parameter.id}")'
        query = (
            f'SELECT {select} FROM "telemetry" WHERE "device" =~ /^$device$/ AND '
            f"\"node\" = '{parameter.node}' AND $timeFilter GROUP BY time($__interval) fill(none)"
        )
        title = f"{parameter.label or parameter.id} ({parameter.node})"
        unit = GRAFANA_UNITS.get(spec.unit or "", "none")
        kind = "timeseries" if numeric else "state-timeline"
        x, y = 12 * (index % 2), 8 * (index // 2)
        panels.append(panel(title, [influx(query, parameter.id)], unit, x, y, kind))
    device = {
        "name": "device",
        "type": "query",
        "datasource": INFLUX,
        "refresh": 1,
        "query": 'SHOW TAG VALUES FROM "telemetry" WITH KEY = "device"',
        "label": "Charger",
    }
    title = f"{family.name} (schema {family.schema_version})"
    return dashboard(f"ampfleet-family-{family.id}", title, panels, [device])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    boards = [("fleet-overview", fleet_overview()), ("charger-detail", charger_detail())]
    for source in sorted(FAMILIES_DIR.glob("*.yaml")):
        boards.append((f"family-{source.stem}", family_dashboard(load_family(source.stem))))
    for name, board in boards:
        (OUT / f"{name}.json").write_text(json.dumps(board, indent=2) + "\n")
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    main()
