"""A witness for audit checkpoints: a separate process that keeps every checkpoint the gateway
publishes and refuses one that rolls the chain back or forks it (docs/audit.md, "Witness").

* :mod:`.decision` — the pure decision: held checkpoints + a posted note → accept or refuse, why.
* :mod:`.server` — ``portcullis audit witness``: the HTTP endpoint and its append-only note file.
* :mod:`.client` — the gateway's side: ``audit.witness``, an exporter that POSTs each checkpoint.
"""
