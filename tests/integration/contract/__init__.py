"""The error-handling contract: one table of AWS's rules, run against every source on its real
server (docs/error-handling.md lists the rows and the test that checks each)."""
