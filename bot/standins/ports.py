"""A stopped stand-in's port, kept so that it serves on the same one again (a server that is down,
then back, at the address its clients know).

Kept bound but not listening: connections to it are refused, as to a server that is down. Given
up instead, the port could be taken meanwhile by any other socket on the machine (another test's
server, an outgoing connection's), and serving on it again would fail with "address in use".
"""

from __future__ import annotations

import socket
import ssl

from aiohttp import web

HOST = "127.0.0.1"


def keep(port: int) -> socket.socket:
    kept = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    kept.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    kept.bind((HOST, port))
    return kept


def site(runner: web.AppRunner, port: int, kept: socket.socket | None, *, backlog: int,
         tls: ssl.SSLContext | None = None) -> web.BaseSite:
    """Where `runner` serves: on `kept`, if it holds `port`; else on `port` (0: a free one).
    `tls`: HTTPS (the certificate and key loaded in it), as the real services serve."""
    if kept is not None and kept.getsockname()[1] == port:
        return web.SockSite(runner, kept, backlog=backlog, ssl_context=tls)
    if kept is not None:
        kept.close()
    return web.TCPSite(runner, HOST, port, backlog=backlog, ssl_context=tls)
