"""What the operator at a terminal should do when APIMart refuses or cannot be reached.

The core words its outcomes for whoever asked (a Discord member: "the bot's operator has been
alerted"). At the terminal the person reading *is* the operator, so these sentences say what
to do and name the URL that was tried. They are chosen from the typed reason the core records
(`Job.error_code`: the API's error type or the client's exception class) or from the
exception itself (`reelbot check`); nothing here parses the core's sentences.
"""

from __future__ import annotations

from bot.core.apimart import (
    ApimartError,
    ApiUnreachable,
    AuthenticationFailed,
    PaymentRequired,
    PermissionDenied,
    RateLimited,
    SubmitOutcomeUnknown,
)

TOP_UP = "top up at https://apimart.ai (console → billing), then run the command again"

# `Job.error_code` is the API's `error.type` when it sent one, else the exception's class name.
_PAYMENT = {"PaymentRequired", "payment_required", "insufficient_quota"}
_AUTH = {"AuthenticationFailed", "authentication_error"}
_PERMISSION = {"PermissionDenied", "permission_error"}
_RATE = {"RateLimited", "rate_limit_error"}
_UNREACHABLE = {"ApiUnreachable"}
_UNKNOWN = {"submit_unknown"}


def for_code(code: str | None, base_url: str) -> str | None:
    """Operator wording for a job's refusal reason; None when the core's text is fine as is."""
    if code in _PAYMENT:
        return f"the APIMart balance of this key is too low for this video ({base_url}); {TOP_UP}"
    if code in _AUTH:
        return (
            f"APIMart at {base_url} refused APIMART_API_KEY: check the key "
            "(`reelbot check` shows which .env is read)"
        )
    if code in _PERMISSION:
        return f"APIMart at {base_url} does not let this key use that model or endpoint"
    if code in _RATE:
        return f"APIMart at {base_url} is rate-limiting this key: wait a minute and try again"
    if code in _UNREACHABLE:
        return (
            f"could not reach APIMart at {base_url}: check APIMART_BASE_URL and the network "
            "(nothing was sent, nothing was charged)"
        )
    if code in _UNKNOWN:
        return (
            f"APIMart at {base_url} did not answer the submit (timeout, server error or dropped "
            "connection): the video may still be made and billed; reelbot did not send it "
            "again. Look for the task in your APIMart console before trying again"
        )
    return None


def for_error(exc: ApimartError, base_url: str) -> str:
    """Operator wording for an error raised while talking to APIMart (e.g. `reelbot check`)."""
    if isinstance(exc, SubmitOutcomeUnknown):
        code = "submit_unknown"
    elif isinstance(exc, PaymentRequired):
        code = "PaymentRequired"
    elif isinstance(exc, AuthenticationFailed):
        code = "AuthenticationFailed"
    elif isinstance(exc, PermissionDenied):
        code = "PermissionDenied"
    elif isinstance(exc, RateLimited):
        code = "RateLimited"
    elif isinstance(exc, ApiUnreachable):
        return (
            f"could not reach APIMart at {base_url} ({exc}): check APIMART_BASE_URL and the network"
        )
    else:
        return f"APIMart at {base_url} answered: {exc}"
    advice = for_code(code, base_url)
    assert advice is not None
    return advice
