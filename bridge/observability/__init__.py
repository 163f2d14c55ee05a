"""What the bridge tells its operators: the request context (`context`), log lines (`logging`), the
one secret masker they and Dust's errors go through (`redact`), and Prometheus metrics (`metrics`).

The lowest layer but the error tree: it imports nothing else of the bridge, so every layer may use it.
"""
