"""``migrator serve``: the HTTP API, its event stream and the dashboard (the optional extra
``serve``: ``pip install 'migrator[serve]'``, ``docs/api.md``).

``create_app`` (``app.py``) builds the ASGI application on an open ``Journal``; each
module owns one part: ``models`` (the request and response bodies), ``problems``
(``application/problem+json`` errors), ``auth`` (bearer tokens and scopes), ``limit``
(request bodies bounded in size), ``migrations`` (the migrations and their actions),
``fleet`` (workers, statistics, health, metrics, the diagram), ``stream`` (the
Server-Sent Events stream), ``hub`` (the journal's log read once for every stream), ``state``
(what routes share) and ``dashboard`` (the static dashboard at ``/``).
"""
