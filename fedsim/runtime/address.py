"""Whether a Ray cluster address answers, found out in bounded time before Ray is asked."""

from __future__ import annotations

import socket

from fedsim.options import ConfigError

#: Seconds to wait for a cluster address to accept a connection before giving up.
CONNECT_TIMEOUT_S = 20.0


#: An HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS and its
#: client server both are) answers with a SETTINGS frame of its own.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def probe_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ConfigError naming ``address`` unless a gRPC server answers there within ``timeout``.

    Ray itself keeps retrying an address that does not answer for minutes; a run should say
    soon that the cluster is not there. 'auto' is resolved by Ray and not probed.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    why = ""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_HELLO)
            head = conn.recv(9)
            if len(head) < 4 or head[3] != 4:
                why = "it answers, but not as a Ray cluster (no gRPC server)"
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
    except OSError as err:
        why = err.strerror or str(err)
    if why:
        raise ConfigError(f"runtime.address: cannot reach {address!r} ({why})")
