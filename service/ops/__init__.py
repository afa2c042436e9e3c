"""Operator tools (day-2 operations): ``esmd test-filter``, ``esmd redrive``, ``esmd status``.

They run beside a daemon, not inside one, and reuse its parts: the sources' codecs and
filter views (:mod:`service.ops.samples`), the Invoker and targets (redrive), the admin
server's /mappings and /metrics (status). Nothing here changes how a mapping delivers.
"""
