"""`atp serve`: the availability API."""

from __future__ import annotations

from atp.cli.common import friendly, settings


@friendly
def serve() -> None:
    """Serve the availability API in the foreground."""
    import uvicorn

    from serving.main import check_auth, create_app

    s = settings()
    check_auth(s)  # before any worker starts
    if s.api_workers == 1:
        uvicorn.run(create_app(s), host=s.api_host, port=s.api_port, log_level="warning", access_log=False)
        return
    from serving.metrics import multiprocess_dir

    multiprocess_dir(s.state_dir / "api-metrics")  # before the workers start: they count into files there
    uvicorn.run("serving.main:main_app", factory=True, workers=s.api_workers, host=s.api_host, port=s.api_port,
                log_level="warning", access_log=False)
