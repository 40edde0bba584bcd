"""Running the gateway: one process (:mod:`.run`), or a supervisor and its workers (:mod:`.supervisor`)."""
