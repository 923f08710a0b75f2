"""bgclient.py PORT PATH OUT INTERVAL: a background client that counts failed requests.

Sends GET PATH on a fresh connection every INTERVAL seconds until SIGTERM, then writes one line
per request to OUT: `start done status` (time.monotonic(), system-wide on Linux, so the
benchmark can pick the requests inside a reload window).
"""
import signal
import socket
import sys
import time


def get(port: int, path: str) -> int:
    """One request on a fresh connection; the HTTP status, or 0 when it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return 0


def main() -> None:
    """Loop until SIGTERM, then write the record."""
    port, path, out, interval = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
    records = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for _ in range(10_000_000):  # bounded; SIGTERM ends it long before
            t = time.monotonic()
            status = get(port, path)
            records.append(f"{t:.6f} {time.monotonic():.6f} {status}")
            time.sleep(interval)
    finally:
        with open(out, "w") as f:
            f.write("\n".join(records) + "\n")


if __name__ == "__main__":
    main()
