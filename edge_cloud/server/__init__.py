"""The daemon runner: one `Daemon` subclass per service, everything else is shared.

`run_daemon` owns what every daemon does the same way: configuration and logging, the gRPC
server with the standard interceptor (error mapping, access log, metrics), health and
reflection, the `/metrics` side port, the ready file, signals and an ordered shutdown::

    class DmeDaemon(Daemon[DmeConfig]):
        name = "dme"

        def add_services(self, server: grpc.aio.Server) -> list[str]:
            match_engine_api_pb2_grpc.add_MatchEngineApiServicer_to_server(self.api, server)
            return ["distributed_match_engine.MatchEngineApi"]

    def main(argv: list[str] | None = None) -> int:
        return run_daemon(DmeDaemon, DmeConfig, sys.argv[1:] if argv is None else argv)

The building blocks (`new_server`, `bind`, `HttpListener`) are public for daemons that open
more listeners in `Daemon.start`.
"""

from edge_cloud.server._daemon import Daemon, run_daemon, serve
from edge_cloud.server._interceptor import StandardInterceptor, standard_interceptors
from edge_cloud.server._listeners import Health, HttpListener, bind, metrics_app, new_server

__all__ = [
    "Daemon",
    "Health",
    "HttpListener",
    "StandardInterceptor",
    "bind",
    "metrics_app",
    "new_server",
    "run_daemon",
    "serve",
    "standard_interceptors",
]
