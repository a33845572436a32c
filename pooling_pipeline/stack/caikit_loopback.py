"""Run `caikit.runtime` with its HTTP server bound to 127.0.0.1 (executed inside the Caikit virtualenv).

caikit 0.28's RuntimeHTTPServer passes host="0.0.0.0" to uvicorn and refuses a `host` in server_config,
so there is no setting for it. Servers of the local stack listen on loopback only, so this wrapper hands
caikit a uvicorn.Config whose host is pinned to loopback, then runs the stock entry point. It imports
nothing from pooling_pipeline: the Caikit env does not have it installed.
"""

import os

import uvicorn

LOOPBACK = os.environ.get("POOLING_CAIKIT_HOST", "127.0.0.1")
_Config = uvicorn.Config


class _LoopbackConfig(_Config):
    def __init__(self, app, *args, **kwargs):
        kwargs["host"] = LOOPBACK
        super().__init__(app, *args, **kwargs)


# Replacing the class is the point: caikit builds its server config as `uvicorn.Config(...)`.
uvicorn.Config = _LoopbackConfig  # type: ignore[misc]

if __name__ == "__main__":
    from caikit.runtime.__main__ import main

    main()
