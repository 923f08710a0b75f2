"""Benchmarks: our reloads, throughput, memory and idle CPU against gunicorn, uvicorn, hupper,
werkzeug and watchfiles. Not part of the test suite; run `python -m bench.all` (see docs/bench.md)."""
