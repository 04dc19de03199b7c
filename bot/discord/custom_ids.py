"""The `custom_id` of reelbot's persistent buttons: one format for the views that make them and
the notifier that recognises a result message it already posted (after a restart)."""

from __future__ import annotations

#: Buttons under a result message (Re-roll is not always offered; Details always is).
RESULT_ACTIONS = ("reroll", "details")


def button_id(action: str, job_id: int) -> str:
    return f"reelbot:{action}:{job_id}"


def is_result_button(custom_id: str, job_id: int) -> bool:
    """True for a result message's button of this job; a queued job's Cancel button on its
    status message is not one (mistaking it made a queued job's result never be posted)."""
    return custom_id in {button_id(action, job_id) for action in RESULT_ACTIONS}
