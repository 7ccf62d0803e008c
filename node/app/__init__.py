"""The composition root: the long-running node (`service`), its HTTP API, dashboard and metrics,
the OHIF viewer proxy, the command line, `process` and the demo. Imports any stage; nothing
imports it.
"""
