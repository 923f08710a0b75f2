"""An asyncio HTTP load generator, used when wrk is not installed.

`python -m bench.loadgen URL --connections 16 --duration 5 [--close]` prints requests/s and errors.
Each connection sends one GET at a time and reads the response by its Content-Length (keep-alive),
or opens a new connection per request with `--close`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
    """Send one request and read its response; True when it was a 2xx."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return 200 <= status < 300


async def _connection(host: str, port: int, path: str, close: bool, stop_at: float, result: LoadResult) -> None:
    """Drive one client connection until stop_at."""
    conn = "close" if close else "keep-alive"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode()
    reader = writer = None
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            ok = await _one(reader, writer, request)
            result.requests += ok
            result.errors += not ok
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.errors += 1
            close = True  # reconnect after a failure
        if close and writer is not None:
            writer.close()
            reader = writer = None


async def run_load(url: str, connections: int, duration: float, close: bool) -> LoadResult:
    """Run `connections` concurrent clients against url for `duration` seconds."""
    parts = urlsplit(url)
    result = LoadResult(0, 0, duration)
    start = time.monotonic()
    await asyncio.gather(*(_connection(parts.hostname, parts.port, parts.path or "/", close,
                                       start + duration, result) for _ in range(connections)))
    result.seconds = time.monotonic() - start
    return result


def main() -> None:
    """Command line: print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--close", action="store_true", help="a fresh connection per request")
    args = parser.parse_args()
    res = asyncio.run(run_load(args.url, args.connections, args.duration, args.close))
    print(json.dumps(dict(asdict(res), rps=res.rps)))


if __name__ == "__main__":
    main()
