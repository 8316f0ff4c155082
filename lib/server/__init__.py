"""The server's own parts: the hardened datastore, the HTTP layer, first-run setup, a server process handle.

MONAI Label's task layer keeps the layout MONAI Label apps use (``lib/configs``,
``lib/infers``, ``lib/trainers``, ``lib/activelearning``); what the app adds around
MONAI Label's server lives here:

- :mod:`lib.server.datastore`: the hardened local datastore (ids, uploads, crash-safe commits);
- :mod:`lib.server.upload_checks`: the checks every upload goes through, header first;
- :mod:`lib.server.http`: routes, middleware and access control installed into MONAI Label's app;
- :mod:`lib.server.setup`: ``make run``'s first-run setup (sample datastore, both models, the server);
- :mod:`lib.server.process`: start and stop a real ``monailabel start_server`` (bench, tests).
"""
