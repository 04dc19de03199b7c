"""Answer each interaction on one replica only: claim it in the database before anything else.

Every session identified for a shard receives every INTERACTION_CREATE of its guilds, so two
unsharded replicas (`docker compose up --scale reelbot=2`, a rolling deploy) both get each
slash command and each click. `take` claims the interaction (bot/core/interaction_claims.py);
the worker that wins handles it, every other one drops it silently (a debug line and the
`reelbot_interaction_claims{outcome="lost"}` counter).

Where it hooks in. discord.py's `ConnectionState.parse_interaction_create` routes an
interaction one of three ways: application commands and autocomplete (types 2, 4) to the
`CommandTree`, components (type 3) to the `ViewStore`, modal submits (type 5) to the
`ViewStore`'s modals; then it dispatches `on_interaction`. The documented overrides cover
each route reelbot uses before any of its code runs:

* `CommandTree.interaction_check` (`ReelTree`): runs first in the tree's `_call`, before the
  command is even looked up: every slash command, context menu and autocomplete.
* `Item.interaction_check` on the persistent buttons (`Claimed`, mixed into every
  `DynamicItem` in `bot.discord.views.DYNAMIC_ITEMS`): the ViewStore runs it before the
  callback. `from_custom_id`, which runs earlier, only parses the id.

reelbot has no modals, no non-persistent views with callbacks and no `on_interaction`
listener; a test (tests/test_claims.py) fails if a dynamic item lacks `Claimed` or the tree
is not a `ReelTree`. The alternative single hook, wrapping the private
`ConnectionState.parsers["INTERACTION_CREATE"]`, would also cover future modals, but it is no
public API and would have to defer discord.py's synchronous parser into a task.

A database failure must not make the bot silent, and must not make it answer twice. On
PostgreSQL (the only place claims run) the claim fails closed: if the INSERT errs or takes
longer than `CLAIM_TIMEOUT`, the member is told privately to try again (an autocomplete gets
no answer) and nothing else is done. Were every replica's database down, each would try the
same ephemeral answer: Discord takes the first, the others meet 40060, logged as one line.
Fail open would be worse: two replicas each admitting the job could charge twice. On SQLite
`Runtime.interaction_claims` is None and `take` admits everything: one `reelbot run` holds
the file lock, so no other process receives the interaction.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord

log = logging.getLogger(__name__)

#: The longest a claim may take before the member is asked to retry: leaves time to answer
#: within Discord's 3 s, and a healthy database answers in milliseconds.
CLAIM_TIMEOUT = 1.5
TRY_AGAIN = (
    "reelbot could not reach its database just now, so nothing was done or charged. "
    "Please try again in a moment."
)
#: Error codes of an acknowledgement that can never succeed: someone (another replica)
#: already answered, or the interaction's token is no longer valid.
ALREADY_ACKNOWLEDGED = 40060
UNKNOWN_INTERACTION = 10062
GONE = frozenset({ALREADY_ACKNOWLEDGED, UNKNOWN_INTERACTION})


def is_gone(error: BaseException) -> bool:
    """True for an answer Discord refused because the interaction was answered or expired."""
    return isinstance(error, discord.HTTPException) and error.code in GONE


def gone_reason(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return "already answered" if code == ALREADY_ACKNOWLEDGED else "expired or unknown"


def _count(client: Any, outcome: str) -> None:
    runtime = getattr(client, "runtime", None)
    if runtime is not None:
        runtime.metrics.interaction_claims.labels(outcome=outcome).inc()


async def take(interaction: discord.Interaction) -> bool:
    """True if this worker handles the interaction; False: drop it (it is someone else's, or
    the database failed and the member was told to retry)."""
    runtime = getattr(interaction.client, "runtime", None)
    claims = runtime.interaction_claims if runtime is not None else None
    if claims is None:  # SQLite (one process), or a bot without a runtime
        return True
    try:
        async with asyncio.timeout(CLAIM_TIMEOUT):
            won = await claims.claim(interaction.id)
    except Exception as exc:
        _count(interaction.client, "error")
        log.warning(
            "interaction %s: could not claim it (%s); asked the member to try again",
            interaction.id,
            type(exc).__name__,
        )
        await _try_again(interaction)
        return False
    if not won:
        _count(interaction.client, "lost")
        log.debug("interaction %s: taken by another worker; dropped", interaction.id)
        return False
    _count(interaction.client, "won")
    return True


async def _try_again(interaction: discord.Interaction) -> None:
    if interaction.type is discord.InteractionType.autocomplete:
        return  # an empty suggestion list says nothing more useful
    try:
        await interaction.response.send_message(TRY_AGAIN, ephemeral=True)
    except discord.HTTPException as exc:
        log.info("interaction %s: could not ask for a retry: %s", interaction.id, exc)


class Claimed:
    """Mix into every persistent button: its `interaction_check` claims the interaction.

    Listed first among the bases, so its `interaction_check` is the one discord.py calls.
    """

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await take(interaction)
