"""The HTTP adapters: each endpoint validates its input, calls one service or selector, and shapes the answer.

views (the jobs endpoints, /metrics), health (/healthz, /readyz), schema (the OpenAPI declarations), serializers,
pagination, parsers, authentication (X-API-Key), permissions, throttling, middleware (the body size limit), urls.
"""
