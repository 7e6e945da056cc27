"""What operators see: health endpoints, Prometheus metrics, structured logs.

`health` serves /healthz and /readyz, `metrics` /metrics, `observe` reports
socket events, `logs` formats log lines, `redaction` masks credentials, and
`errors` says which exceptions mean a backing service is down.
"""
