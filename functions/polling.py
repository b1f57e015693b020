"""The timer: sweep what is due (timeouts, polls, retries, delays, recovery)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import bootstrap

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("hookflow.polling")


@bp.timer_trigger(schedule="%HOOKFLOW_POLL_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=False)
def sweep(timer: func.TimerRequest) -> None:
    report = bootstrap.engine().sweep()
    if report.found:
        log.info(
            "sweep: %d due, %d done, %d busy, %d failed, %d left for the next tick (%.2f s)",
            report.found,
            report.done,
            report.busy,
            report.failed,
            report.left,
            report.seconds,
        )
