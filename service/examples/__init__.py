"""Example handlers, bundled so the demo and the docs have something real to invoke."""
