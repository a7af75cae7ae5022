"""Real faults for tests: a database trigger that makes writes fail, and a TCP proxy in front of
PostgreSQL that can be cut (connections refused and dropped) without touching the shared server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from poflow_dagster.store.db import Database


@contextmanager
def failing_writes(db: Database, table: str, operation: str = "UPDATE") -> Iterator[None]:
    """Every ``operation`` (INSERT/UPDATE) on ``table`` raises inside the database until the block ends."""
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION poflow_injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER poflow_injected_fault BEFORE {operation} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION poflow_injected_fault()"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER poflow_injected_fault BEFORE {operation} ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP TRIGGER poflow_injected_fault ON {table}")
                conn.exec_driver_sql("DROP FUNCTION poflow_injected_fault()")
            else:
                conn.exec_driver_sql("DROP TRIGGER poflow_injected_fault")


class CuttableProxy:
    """A TCP proxy on a free local port to ``target``. ``cut()`` closes the listener (new connections
    are refused) and drops every open connection; ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut or closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); then it is gone
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            self._close(sock)

    def restore(self) -> None:
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self.cut()
