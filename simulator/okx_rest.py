"""OKX v5 REST on the simulator: ``GET /api/v5/market/books`` (with ``seqId``, so a client can join the
WebSocket chain) and ``GET /api/v5/public/instruments`` (the synthetic pairs plus the replayed ones).
With ``--replay``, a recorded books body is served as recorded (successive requests: successive bodies)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from simulator.okx import OkxVenue, inst_type, now_ms


async def books(okx: OkxVenue, request: web.Request) -> web.Response:
    inst = request.query.get("instId", "")
    recorded = okx.engine.recordings.okx_rest_books.get(inst)
    if recorded:
        n = okx.rest_served.get(inst, 0)
        okx.rest_served[inst] = n + 1
        return web.Response(text=recorded[min(n, len(recorded) - 1)], content_type="application/json")
    if inst not in okx.engine.markets:
        return _okx_json({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    try:
        size = max(1, min(400, int(request.query.get("sz", "1"))))
    except ValueError:
        return _okx_json({"code": "51000", "msg": "Parameter sz error", "data": []})
    market = okx.engine.markets[inst]
    bids = [(t, market.bids.levels[t]) for t in market.bids.top(size)]
    asks = [(t, market.asks.levels[t]) for t in market.asks.top(size)]
    body = (f'{{"code":"0","msg":"","data":[{{"asks":[{okx.levels_text(inst, False, asks)}],'
            f'"bids":[{okx.levels_text(inst, True, bids)}],"ts":"{now_ms()}","seqId":{okx.books[inst].seq}}}]}}')
    return web.Response(text=body, content_type="application/json")

async def instruments(okx: OkxVenue, request: web.Request) -> web.Response:
    wanted = request.query.get("instType")
    rows = []
    for inst in sorted(set(okx.engine.markets) | okx.engine.recordings.okx_instruments):
        kind = inst_type(inst)
        if wanted and wanted != kind:
            continue
        parts = inst.split("-")
        spec = okx.engine.specs.get(inst)
        rows.append({
            "instType": kind, "instId": inst, "baseCcy": parts[0] if kind == "SPOT" else "",
            "quoteCcy": parts[1] if kind == "SPOT" else "", "settleCcy": "" if kind == "SPOT" else parts[1],
            "uly": "" if kind == "SPOT" else f"{parts[0]}-{parts[1]}", "ctVal": "" if kind == "SPOT" else "1",
            "tickSz": spec.tick_size if spec else "", "lotSz": spec.lot_size if spec else "",
            "minSz": spec.lot_size if spec else "", "state": "live",
        })
    return _okx_json({"code": "0", "msg": "", "data": rows})


def _okx_json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
