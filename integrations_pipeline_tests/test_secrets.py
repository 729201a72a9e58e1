"""Secrets never shown: a whole main job through the CLI with unique credentials, then a run against an
unreachable warehouse whose URL holds a password. Neither any secret nor its common encodings (upper and
lower case, URL-encoded, base64) may appear in stdout, stderr, the Dagster instance directory, ``.data/``
or any warehouse table.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

from integrations_pipeline.sandbox import sandbox_environment
from integrations_pipeline.sandbox.datatalks import DatatalksSandbox
from integrations_pipeline.sandbox.salesmanago import SalesmanagoSandbox
from integrations_pipeline.sandbox.salestrekker import SalestrekkerSandbox
from integrations_pipeline.sandbox.server import serve
from integrations_pipeline.sandbox.trackstar import TrackstarSandbox
from integrations_pipeline.sandbox.trakor import TrakorSandbox

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "trackstar_key": "TSK-q8w7e6r5t4y3",
    "token_a": "TOKA-z1x2c3v4b5n6",
    "token_b": "TOKB-m9n8b7v6c5x4",
    "st_key": "STK-a1s2d3f4g5h6",
    "sm_key": "SMK-p0o9i8u7y6t5",
    "sm_secret": "SMS-l1k2j3h4g5f6",
    "sm_v3": "SMV3-r4e3w2q1z0x9",
    "dt_secret": "DTS-c7v8b9n0m1q2",
    "dt_group": "DTG-w3e4r5t6y7u8",
    "trakor_key": "TRK-h9j8k7l6z5x4",
    "pg_password": "PGPW-y6u7i8o9p0a1",
}


def encodings(value: str) -> set[str]:
    return {
        value,
        value.upper(),
        value.lower(),
        quote(value, safe=""),
        base64.b64encode(value.encode()).decode().rstrip("="),
    }


def leaks(text: str) -> list[str]:
    return sorted({f"{name} ({form})" for name, value in SECRETS.items() for form in encodings(value) if form in text})


def scan_tree(root: Path) -> list[str]:
    found: list[str] = []
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < 200 << 20:
            data = path.read_bytes().decode("utf-8", "replace")
            found += [f"{path.relative_to(root)}: {leak}" for leak in leaks(data)]
    return found


def scan_tables(url: str) -> list[str]:
    import duckdb

    conn = duckdb.connect(url.removeprefix("duckdb://"), read_only=True)
    try:
        found: list[str] = []
        for schema, table in conn.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall():
            text = "\n".join(map(str, conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))
            found += [f"{schema}.{table}: {leak}" for leak in leaks(text)]
        return found
    finally:
        conn.close()


class EchoingTrakor(TrakorSandbox):
    """Refuses its first product with a message echoing the API key upper-cased and base64-encoded, as
    careless vendors do: the reason lands in the rejects table, the logs and the run's metadata."""

    def _create_product(self, body):
        self.echoed = getattr(self, "echoed", 0) + 1
        if self.echoed == 1:
            key = self.api_key
            return httpx.Response(
                400,
                json={
                    "error": f"key {key.upper()} ({base64.b64encode(key.encode()).decode()}) may not create {body.get('name')}"
                },
            )
        return super()._create_product(body)


def test_no_secret_in_any_output_file_or_table(tmp_path):
    s = SECRETS
    salesmanago = SalesmanagoSandbox(
        api_key=s["sm_key"], api_secret=s["sm_secret"], v3_api_key=s["sm_v3"], requests_per_hour=None
    )
    sandboxes = {
        "trackstar": TrackstarSandbox(
            seed=1,
            sizes={
                "inventory": 30,
                "products": 10,
                "orders": 30,
                "warehouses": 2,
                "inbound_shipments": 5,
                "returns": 5,
            },
            api_key=s["trackstar_key"],
            connections={"conn_a": s["token_a"], "conn_b": s["token_b"]},
        ),  # fmt: skip
        "salestrekker": SalestrekkerSandbox(seed=1, sizes={"deals": 10, "contacts": 10}, api_key=s["st_key"]),
        "salesmanago": salesmanago,
        "datatalks": DatatalksSandbox(
            secret_access_key=s["dt_secret"], group_keys={s["dt_group"]}, forward_to=salesmanago
        ),
        "trakor": EchoingTrakor(api_key=s["trakor_key"]),
    }
    work = tmp_path / "work"
    work.mkdir()
    with serve(sandboxes) as servers:
        env = {**os.environ, **sandbox_environment(servers.base_urls, sandboxes), "DATATALKS_GROUP_KEY": s["dt_group"]}
        env.pop("WAREHOUSE_URL", None)
        run = subprocess.run(
            [sys.executable, "-m", "integrations_pipeline.cli", "run", "--no-sandbox", "--dagster-home", str(work / "dh")],
            cwd=work, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "sync summary" in run.stdout
    assert leaks(run.stdout + run.stderr) == []
    assert scan_tree(work) == []
    assert scan_tables(f"duckdb://{work / '.data' / 'warehouse.duckdb'}") == []
    assert sandboxes["trakor"].echoed >= 1  # the echo happened, and was masked everywhere it went

    # A warehouse that cannot be reached, its password in the URL: the error and the summary show no password.
    bad = {**env, "WAREHOUSE_URL": f"postgresql://ip_user:{s['pg_password']}@127.0.0.1:9/nowhere"}
    failed = subprocess.run(
        [sys.executable, "-m", "integrations_pipeline.cli", "run", "--no-sandbox", "--dagster-home", str(work / "dh2")],
        cwd=work, env=bad, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "ip_user:***@127.0.0.1" in failed.stdout + failed.stderr
    assert leaks(failed.stdout + failed.stderr) == []
    assert scan_tree(work / "dh2") == []
