"""`atp serve`: the availability API."""

from __future__ import annotations

from typing import Any

from atp.cli.common import friendly, settings


@friendly
def serve() -> None:
    """Serve the availability API in the foreground."""
    import uvicorn

    from serving.main import check_auth, create_app

    s = settings()
    check_auth(s)  # before any worker starts
    tls: dict[str, Any] = {} if s.api_tls_cert_file is None else {"ssl_certfile": str(s.api_tls_cert_file),
                                                                  "ssl_keyfile": str(s.api_tls_key_file)}
    if s.api_workers == 1:
        uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level="warning", access_log=False, **tls)
        return
    from serving.metrics import multiprocess_dir

    multiprocess_dir(s.state_dir / "api-metrics")  # before the workers start: they count into files there
    uvicorn.run("serving.main:main_app", factory=True, workers=s.api_workers, host=s.api_host, port=s.api_port,
                log_level="warning", access_log=False, **tls)
