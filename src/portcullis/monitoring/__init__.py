"""Runtime monitoring: explainable baselines of the gateway's own traffic and the alerts they raise.

* :mod:`.baseline` — exponentially weighted mean and variance per key over fixed windows, and a
  bounded, least-recently-used key table (hostile agent ids or tool names cannot grow memory).
* :mod:`.detectors` — the rules (spikes, a new identity on a high-risk tool, cross-tenant spread, a
  new egress destination, a new argument shape) as pure functions of observations and a clock: no I/O.
* :mod:`.containment` — the :class:`~.containment.Containment` seam a rule uses to propose or apply
  a kill switch (the integrator wires it to the kill-switch store and the approvals machinery).
* :mod:`.monitor` — the gateway side: an O(1) observation on the request path into a bounded queue,
  a background task that drains it, runs the detectors and sends each alert to the sinks.

See docs/alerts.md.
"""
