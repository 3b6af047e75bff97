"""Large operations: one ``BulkOperation`` over up to millions of sessions.

- ``scope``: who may go past the per-operation cap, and the ``LargeSelection``;
"""
