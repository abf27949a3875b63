"""Stripe webhooks: verified, stored once, acted on once."""

from __future__ import annotations

from functools import partial

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.checkout.notify import queue_purchase_email
from app.checkout.webhooks import handle_event
from app.integrations.stripe_api import BadWebhook, expected_livemode, verify_webhook

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger()


@router.post(
    "/webhooks/stripe",
    responses={
        400: {"description": "bad payload or signature"},
        404: {"description": "webhooks are not configured (no RAPPORT_STRIPE_WEBHOOK_SECRET)"},
    },
)
async def stripe_webhook(request: Request) -> JSONResponse:
    """Receive a Stripe event (signed with RAPPORT_STRIPE_WEBHOOK_SECRET)."""
    settings = request.app.state.settings
    if not settings.stripe_webhook_secret:
        return JSONResponse(
            {"detail": "Stripe webhooks are not configured", "status": 404}, status_code=404
        )
    payload = await request.body()
    try:
        event = verify_webhook(
            payload, request.headers.get("stripe-signature"), settings.stripe_webhook_secret
        )
    except BadWebhook as exc:
        log.warning("webhook.rejected", reason=str(exc))
        return JSONResponse({"detail": str(exc), "status": 400}, status_code=400)
    state = request.app.state

    def on_paid(order_id: int) -> None:
        queue_purchase_email(state.jobs, order_id)

    result = await run_in_threadpool(
        partial(handle_event, livemode=expected_livemode(settings.stripe_secret_key)),
        state.engine,
        event,
        on_paid,
    )
    log.info("webhook.received", event_id=event["id"], type=event["type"], result=result)
    return JSONResponse({"received": True, "result": result})
