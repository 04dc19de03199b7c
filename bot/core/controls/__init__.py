"""Community controls: who may generate what, at what cost, in what order.

Every rule lives here, in the core, so any front end (Discord, the terminal) gets the same
answers: `admission` decides (refuse, queue or go) and reserves money in one transaction,
`ledger` turns reservations into actual costs when jobs end, `queue` submits queued jobs
fairly, `usage` reports, `retention` prunes old jobs while the per-day aggregates stay.
"""
