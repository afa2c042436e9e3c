"""Lambda's event source mapping API (Create, Get, List, Update, Delete) on server.listen.

- ``shapes``: the request and response shapes, read from botocore's Lambda service model;
  AWS's error responses.
- ``sigv4``: verifies Signature Version 4 with botocore's own signer.
- ``store``: API-created mappings in sqlite, so they survive restarts.
- ``control``: the live set of mappings (file and API), their API states, and the operations.
- ``routes``: the aiohttp handlers.
"""
