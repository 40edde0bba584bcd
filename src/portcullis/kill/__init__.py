"""Kill switches: disable a tool, a service or a tenant; block an agent, client, user or source app.

:mod:`.model` holds the pure parts (kinds, input checks, the immutable snapshot and its per-call
lookup), :mod:`.store` the store seam (:class:`~.store.KillSwitchStore`, SQLite and in-memory),
:mod:`.runtime` the gateway's holder (refresh, poll, audit), :mod:`.api` the admin API.
See docs/kill-switches.md.
"""
