#!/usr/bin/env python3
"""A trivial relay with the surface of qunbridge's `api` connector, for `qunbridge-bench`.

One process, one asyncio event loop, aiohttp, no broker, no store, no dedup, no queue:

* `POST /api/v1/groups/{group}/messages` with `{"sender": {"id": ..., "name": ...}, "text": ...}`
  answers `202 {"id": ...}` after the message was handed to every connected WebSocket;
* `GET /api/v1/ws` is a WebSocket that receives each posted message as one JSON text frame
  shaped like qunbridge's (an outbound message: id, group, origin, sender, rendered `text`
  and `segments`).

It is what a user could write in an afternoon instead of running qunbridge: the benchmark
measures it with the same client, in the same run, and reports qunbridge's `api` -> `api`
throughput and CPU per message as ratios to it.

    python3 bench/baseline_relay.py --port 8090    # prints "ready <port>" once listening
"""

import argparse
import asyncio
import itertools
import json
import sys
import time

from aiohttp import WSMsgType, web

# Every message gets the next number; ids are unique within the process.
IDS = itertools.count(1)
# The connected WebSocket consumers.
CLIENTS = set()


def bad_request(reason):
    """A 400 answer with a JSON error, as qunbridge gives."""
    return web.json_response({"error": reason}, status=400)


async def post_message(request):
    """Relays one posted message to every connected WebSocket, then answers 202."""
    group = request.match_info["group"]
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        return bad_request("the body is not JSON")
    if not isinstance(body, dict):
        return bad_request("the body is not a JSON object")
    sender = body.get("sender")
    text = body.get("text")
    if not isinstance(sender, dict) or not isinstance(text, str):
        return bad_request("`sender` and `text` are required")
    sender_id = str(sender.get("id", ""))
    name = str(sender.get("name", sender_id))
    message_id = "%x" % next(IDS)
    prefix = "[API] %s: " % name
    frame = json.dumps(
        {
            "v": 1,
            "id": message_id,
            "link": "baseline",
            "group": group,
            "kind": "message",
            "origin": {
                "platform": "api",
                "account": "in",
                "group": group,
                "message_id": message_id,
            },
            "sender": {"id": sender_id, "name": name, "is_bot": False},
            "ts_ms": int(time.time() * 1000),
            "prefix": prefix,
            "text": prefix + text,
            "segments": [{"type": "text", "text": prefix + text}],
        },
        ensure_ascii=False,
    )
    for ws in list(CLIENTS):
        try:
            await ws.send_str(frame)
        except (ConnectionError, RuntimeError):
            CLIENTS.discard(ws)
    return web.json_response({"id": message_id}, status=202)


async def websocket(request):
    """Keeps one consumer connected until it leaves; what it sends is ignored."""
    ws = web.WebSocketResponse(max_msg_size=64 * 1024)
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        CLIENTS.discard(ws)
    return ws


async def serve(host, port):
    """Serves until killed."""
    app = web.Application()
    app.router.add_post("/api/v1/groups/{group}/messages", post_message)
    app.router.add_get("/api/v1/ws", websocket)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print("ready %d" % port, flush=True)
    await asyncio.Event().wait()


def main():
    """Reads the command line and serves."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
