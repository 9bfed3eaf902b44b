"""Drives the official Python SDK (synap-sdk on PyPI) against a node.

Usage: python_sdk.py BASE_URL ROOM
Prints one JSON object with what the SDK reported, for the Rust test to
check against the cluster's own history.
"""
import asyncio
import json
import sys

from synap_sdk import SynapClient, SynapConfig


async def main(base_url: str, room: str) -> None:
    report = {}
    async with SynapClient(SynapConfig(base_url)) as client:
        await client.stream.create_room(room)
        report["created_again"] = await client.stream.get_or_create_room(room)
        offsets = []
        for i in range(3):
            offsets.append(await client.stream.publish(room, "sdk.python", {"i": i, "lang": "python"}))
        report["offsets"] = offsets
        events = await client.stream.read(room, offset=0)
        report["events"] = [
            {"offset": e.offset, "event": e.event, "data": e.data, "timestamp": e.timestamp} for e in events
        ]
        report["stats"] = await client.stream.stats(room)
        report["rooms"] = await client.stream.list_rooms()
        scratch = room + "-scratch"
        await client.stream.create_room(scratch)
        await client.stream.delete_room(scratch)
        report["rooms_after_delete"] = await client.stream.list_rooms()
        await client.kv.set("py:key", "py-value", ttl=60)
        await client.kv.set("py:obj", {"a": 1})
        report["kv_get"] = await client.kv.get("py:key")
        report["kv_obj"] = await client.kv.get("py:obj")
        report["kv_exists"] = await client.kv.exists("py:key")
        await client.kv.delete("py:key")
        report["kv_after_delete"] = await client.kv.get("py:key")
    print(json.dumps(report))


asyncio.run(main(sys.argv[1], sys.argv[2]))
