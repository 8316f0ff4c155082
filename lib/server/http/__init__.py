"""The app's HTTP layer over MONAI Label's FastAPI server.

MONAI Label builds its FastAPI app before it loads this app; :func:`lib.server.http.install.install`
(called from ``LorisApp.server_mode``, in the server process only) then adds what a
server on a hospital network needs: the access token (:mod:`.auth`), request body limits
and path-free answers (:mod:`.middleware`), CORS limited to configured origins, and
replacement routes for every endpoint that takes an upload or parses JSON itself
(:mod:`.routes`), so that a refused request leaves nothing on disk and client input
never causes a 500.
"""
