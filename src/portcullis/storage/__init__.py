"""Where shared state lives: the embedded default (SQLite files, in-process state) or a cluster
(PostgreSQL for durable records, Redis for counters and propagation), chosen by ``storage:``.

See docs/cluster.md and docs/decisions.md ("Issue 16").
"""
