"""`listening data=http://127.0.0.1:PORT` on stdout once PORT accepts
connections: the line the tests wait for, like tollgate's own processes."""

from __future__ import annotations

import socket
import threading
import time


def announce_when_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            print(f"listening data=http://127.0.0.1:{port}", flush=True)
            return
        except OSError:
            time.sleep(0.05)


def announce_in_background(port: int) -> None:
    threading.Thread(target=announce_when_ready, args=(port,), daemon=True).start()
