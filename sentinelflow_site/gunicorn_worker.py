"""gunicorn's threaded worker, with a time limit on every read and write of a client socket.

gthread makes a client's socket blocking, without a timeout, before it reads a request: a client
that sends half its headers and stops holds that thread until it hangs up. With a timeout on each
socket operation (WEB_CLIENT_TIMEOUT seconds) the thread drops such a client and serves others.
A client that trickles a byte now and then still holds a thread; that is what the reverse proxy in
front is for (docs/security.md: Deploying behind a proxy).
"""

from __future__ import annotations

import errno
import os

from gunicorn.workers import gthread

CLIENT_TIMEOUT = float(os.environ.get("WEB_CLIENT_TIMEOUT", "10"))


class _TimeoutEndsConnection:
    """The request parser, where a client that stalls past the timeout simply ends the connection:
    gthread logs a StopIteration at debug level, a TimeoutError as an error with a traceback."""

    def __init__(self, parser):
        self._parser = parser

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._parser)
        except TimeoutError:
            raise StopIteration from None

    def __getattr__(self, name):
        return getattr(self._parser, name)


class TimedConn(gthread.TConn):
    def init(self):
        super().init()
        # handle() sets the socket blocking (timeout None) before each request, then calls init().
        self.sock.settimeout(CLIENT_TIMEOUT)
        parser = self.parser  # type: ignore[has-type]  # gunicorn is untyped
        if parser is not None and not self.is_http2 and not isinstance(parser, _TimeoutEndsConnection):
            self.parser = _TimeoutEndsConnection(parser)


class ThreadWorker(gthread.ThreadWorker):
    """gthread with TimedConn connections."""

    def accept(self, listener):
        # gthread's accept, building a TimedConn.
        try:
            client_sock, client_addr = listener.accept()
            self.nr_conns += 1
            client_sock.setblocking(True)
            self.enqueue_req(TimedConn(self.cfg, client_sock, client_addr, listener.getsockname()))
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
