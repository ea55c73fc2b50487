"""``ampfleet labels``: a factory station prints label sheets and releases chargers by scanning.

Both commands are clients of the REST API (``POST /api/v1/labels``, ``POST /api/v1/releases``,
docs/pairing.md), authenticated by a bearer token of an account holding
``manufacturing:release`` (the ``factory-station`` role): they run on the line's computer, not
beside the database.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

TIMEOUT = 120.0  # a sheet of 100 chargers hashes 100 box codes before it answers


class ApiError(click.ClickException):
    """The API refused: its status and message (which names the field at fault)."""

    def __init__(self, status: int, body: bytes) -> None:
        try:
            message = json.loads(body).get("message", "")
        except ValueError:
            message = body[:200].decode(errors="replace")
        super().__init__(f"the API answered {status}: {message}")
        self.status = status


def call(api: str, token: str, path: str, body: dict[str, Any]) -> tuple[bytes, str]:
    """POST ``body`` as JSON to ``api``/api/v1``path``; (answer, content type), ApiError else."""
    if not api.startswith(("http://", "https://")):
        raise click.ClickException(f"--api must be an http:// or https:// URL, not {api!r}")
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked just above
        f"{api.rstrip('/')}/api/v1{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - checked
            return answer.read(), answer.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raise ApiError(exc.code, exc.read()) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach the API at {api}: {exc}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only: a label sheet holds box codes in clear."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # before writing: O_CREAT's mode does not apply to an existing file
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


_API = click.option(
    "--api",
    default="http://127.0.0.1:8080",
    show_default=True,
    envvar="AMPFLEET_API_URL",
    help="The API's base URL (env AMPFLEET_API_URL).",
)
_TOKEN = click.option(
    "--token",
    required=True,
    envvar="AMPFLEET_TOKEN",
    help="Bearer token of a factory-station account (env AMPFLEET_TOKEN).",
)


@click.group()
def labels() -> None:
    """Factory station: print label sheets, release chargers by scanning their two labels."""


@labels.command("print")
@_API
@_TOKEN
@click.option("--device", "device_ids", multiple=True, help="Device id (repeat).")
@click.option(
    "--batch",
    "batch_id",
    type=click.IntRange(min=1),
    help="Instead of --device: the batch's next sheet (its provisioned devices without labels).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the sheet; .png for a PNG, anything else a PDF.",
)
def print_labels(
    api: str, token: str, device_ids: tuple[str, ...], batch_id: int | None, out: Path
) -> None:
    """Issue the codes of provisioned devices and write their label sheet (PDF or PNG).

    Every print issues new box codes (the old box labels stop working): print once, stick the
    labels, then release. The sheet holds the box codes in clear: it is written 0600.
    """
    if bool(device_ids) == (batch_id is not None):
        raise click.UsageError("give --device (repeat) or --batch, not both")
    kind = "png" if out.suffix.lower() == ".png" else "pdf"
    body: dict[str, object] = {"format": kind}
    if batch_id is not None:
        body["batch_id"] = batch_id
    else:
        body["device_ids"] = list(device_ids)
    sheet, _ = call(api, token, "/labels", body)
    write_private(out, sheet)
    what = f"batch {batch_id}" if batch_id is not None else f"{len(device_ids)} chargers"
    click.echo(f"{out}: labels of {what} ({kind}, {len(sheet)} bytes)")


@labels.command("release")
@_API
@_TOKEN
def release(api: str, token: str) -> None:
    """Release chargers by scanning: read lines from standard input (a barcode scanner types
    them), the charger's label then its box's, and release each pair.

    A refused pair (wrong box, not provisioned...) is reported and the scanning goes on; the
    exit status is 1 when any pair was refused.
    """
    refused = 0
    pending: str | None = None
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        if pending is None:
            pending = line
            continue
        try:
            answer, _ = call(api, token, "/releases", {"charger_code": pending, "box_code": line})
        except ApiError as exc:
            refused += 1
            click.echo(f"REFUSED {pending}: {exc.message}", err=True)
        else:
            done = json.loads(answer)
            click.echo(f"released {done['device_id']} ({done['serial']}) {done['charger_code']}")
        pending = None
    if pending is not None:
        refused += 1
        click.echo(f"REFUSED {pending}: no box label scanned after it", err=True)
    if refused:
        raise SystemExit(1)
