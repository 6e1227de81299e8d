"""The engine: drives migrations under the write-ahead rule (docs/architecture.md).

``coordinator`` is its front; ``writeahead`` the only code that writes migration state;
``steps`` calls driver hooks; ``retry`` the one retry policy; ``flows`` each protocol's
steps, failure rules and recovery plans.
"""
