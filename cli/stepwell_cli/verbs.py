"""The API calls behind the subcommands and the MCP tools, one function each (API.md)."""

from __future__ import annotations

from typing import Any

from stepwell_cli.client import Client, quote

MAX_PAGES = 100  # a listing is for reading; a few thousand rows at most


def pages(client: Client, path: str, **query: Any) -> list[Any]:
    """Every item of a paged listing (`{"items", "next_cursor"}`), following cursors."""
    items: list[Any] = []
    cursor = None
    for _ in range(MAX_PAGES):
        page = client.get(path, **query, cursor=cursor)
        if isinstance(page, list):  # a listing that is not paged
            return page
        items += page.get("items", [])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items


def validate(client: Client, name: str, code: str) -> dict:
    return client.post(f"/workflows/{quote(name)}/validate", {"code": code})


def deploy(client: Client, name: str, code: str, description: str | None = None) -> dict:
    """The workflow with its `version`; `created` says whether the code made a new one."""
    body = {"code": code} if description is None else {"code": code, "description": description}
    doc = client.put(f"/workflows/{quote(name)}", body)
    return {**doc, "created": client.last_status == 201}


def start(
    client: Client,
    workflow: str,
    payload: Any = None,
    instance_id: str | None = None,
    version: str | None = None,
) -> dict:
    body = {
        k: v
        for k, v in (("payload", payload), ("id", instance_id), ("version", version))
        if v is not None
    }
    return client.post(f"/workflows/{quote(workflow)}/instances", body)


def status(client: Client, instance_id: str) -> dict:
    return client.get(f"/instances/{quote(instance_id)}")


def send_event(client: Client, instance_id: str, type: str, payload: Any = None) -> dict:
    body = {"type": type} if payload is None else {"type": type, "payload": payload}
    return client.post(f"/instances/{quote(instance_id)}/events", body)


def events(client: Client, instance_id: str) -> list[dict]:
    return pages(client, f"/instances/{quote(instance_id)}/events")


def history(client: Client, instance_id: str, run: int | None = None) -> dict:
    return client.get(f"/instances/{quote(instance_id)}/history", run=run)


def runs(client: Client, instance_id: str) -> Any:
    return client.get(f"/instances/{quote(instance_id)}/runs")


def restart(
    client: Client, instance_id: str, from_step: int | None = None, version: str | None = None
) -> dict:
    """A new run; with neither option, the bodiless restart of the first release."""
    body = {k: v for k, v in (("from_step", from_step), ("version", version)) if v is not None}
    return client.post(f"/instances/{quote(instance_id)}/restart", body or None)


def rerun(
    client: Client,
    instance_id: str,
    new_id: str | None = None,
    payload: Any = None,
    version: str | None = None,
) -> dict:
    body = {
        k: v
        for k, v in (("id", new_id), ("payload", payload), ("version", version))
        if v is not None
    }
    return client.post(f"/instances/{quote(instance_id)}/rerun", body)


def set_secret(client: Client, name: str, value: str) -> dict:
    return client.put(f"/secrets/{quote(name)}", {"value": value})


def secrets(client: Client) -> list[dict]:
    return pages(client, "/secrets")


def delete_secret(client: Client, name: str) -> None:
    client.delete(f"/secrets/{quote(name)}")


def set_schedule(client: Client, workflow: str, name: str, **fields: Any) -> dict:
    body = {k: v for k, v in fields.items() if v is not None}
    return client.put(f"/workflows/{quote(workflow)}/schedules/{quote(name)}", body)


def schedules(client: Client) -> list[dict]:
    return pages(client, "/schedules")


def delete_schedule(client: Client, workflow: str, name: str) -> None:
    client.delete(f"/workflows/{quote(workflow)}/schedules/{quote(name)}")


def schedule_fires(client: Client, name: str) -> list[dict]:
    return pages(client, f"/schedules/{quote(name)}/fires")
