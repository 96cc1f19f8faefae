"""``/v1/alerts``: the caller's price alerts (admins: every alert), through :class:`service.alerts.AlertService`.

Bodies are parsed with decimals kept exact (``40000.10`` stays ``"40000.1"``, never a float) and validated by
the same rules as ``cryptoflow alerts`` (:mod:`operators.alerts`): one 422 naming the first bad field.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from connectors.alerts.index import AlertIndex
from operators.alerts import AlertInputError, check_instrument, parse_change, parse_new_alert
from service.alerts import AlertOut, AlertService, Scope
from service.auth import current_user
from service.errors import ApiError, invalid
from service.users import Principal

router = APIRouter(tags=["alerts"])
Caller = Annotated[Principal, Depends(current_user)]


class AlertBody(BaseModel):
    """Documentation of the add-alert body (the route parses it itself, to keep prices exact)."""

    price: float | str
    crypto: str
    direction: bool
    email: str


class AlertPatch(BaseModel):
    price: float | str | None = None
    crypto: str | None = None
    direction: bool | None = None
    email: str | None = None


class AlertList(BaseModel):
    alerts: list[AlertOut]


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw, parse_float=Decimal)  # exact: orjson would hand us binary floats
    except ValueError:
        error = invalid("body", "not valid JSON")
        raise error from None
    if not isinstance(data, dict):
        error = invalid("body", 'expected a JSON object like {"price": 40000.0, "crypto": "BTC-USDT", ...}')
        raise error
    return data


def service(request: Request) -> AlertService:
    return AlertService(request.app.state.db, AlertIndex(request.app.state.redis))


@router.post("/v1/alerts", status_code=201, response_model=AlertOut, openapi_extra=_body_doc(AlertBody))
async def create_alert(request: Request, user: Caller) -> AlertOut:
    data = await _json_object(request)
    missing = [k for k in ("price", "crypto", "direction", "email") if k not in data]
    if missing:
        error = invalid(missing[0], "field required")
        raise error
    try:
        spec = parse_new_alert(data)
    except AlertInputError as err:
        raise ApiError(422, "invalid_request", str(err)) from None
    return await service(request).create(Scope.of(user), spec)


@router.get("/v1/alerts", response_model=AlertList)
async def list_alerts(request: Request, user: Caller,
                      crypto: Annotated[str | None, Query(description="only this instrument")] = None) -> AlertList:
    if crypto is not None:
        try:
            crypto = check_instrument(crypto)
        except ValueError as err:
            error = invalid("crypto", str(err))
            raise error from None
    return AlertList(alerts=await service(request).list_alerts(Scope.of(user), crypto))


@router.get("/v1/alerts/{alert_id}", response_model=AlertOut)
async def get_alert(request: Request, alert_id: str, user: Caller) -> AlertOut:
    return await service(request).get(Scope.of(user), alert_id)


@router.patch("/v1/alerts/{alert_id}", response_model=AlertOut, openapi_extra=_body_doc(AlertPatch))
async def change_alert(request: Request, alert_id: str, user: Caller) -> AlertOut:
    data = await _json_object(request)
    if not any(data.get(k) is not None for k in ("price", "crypto", "direction", "email")) and not (
            set(data) - {"price", "crypto", "direction", "email"}):
        error = invalid("body", "nothing to change: give at least one of price, crypto, direction, email")
        raise error
    try:
        change = parse_change(data)
    except AlertInputError as err:
        raise ApiError(422, "invalid_request", str(err)) from None
    return await service(request).change(Scope.of(user), alert_id, change)


@router.delete("/v1/alerts/{alert_id}", status_code=204, response_class=Response)
async def delete_alert(request: Request, alert_id: str, user: Caller) -> Response:
    await service(request).delete(Scope.of(user), alert_id)
    return Response(status_code=204)
