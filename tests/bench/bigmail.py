#!/usr/bin/env python3
"""Many large messages at once (prints figures; not a test).

    bigmail.py HOST PORT SESSIONS SIZE

Opens SESSIONS SMTP sessions at once; each sends one message of SIZE bytes without SIZE=,
so the server learns the size only as the data arrives. Prints one line of counts:
`accepted=N deferred=N refused=N failed=N`: 2xx, 4xx, 5xx replies at MAIL or after the dot,
and sessions that ended without a reply (a connection reset: the server died or cut it).
"""

import asyncio
import sys


async def reply(reader):
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def one(host, port, size, counts):
    line = b"x" * 998 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * max(1, size // len(line))
    try:
        reader, writer = await asyncio.open_connection(host, port)
        await reply(reader)
        for command in (b"EHLO big.test", b"MAIL FROM:<bench@client.test>",
                        b"RCPT TO:<user1@example.test>", b"DATA"):
            writer.write(command + b"\r\n")
            await writer.drain()
            code = await reply(reader)
            if command == b"DATA" and code == 354:
                break
            if code >= 400:
                counts["deferred" if code < 500 else "refused"] += 1
                writer.close()
                return
        for i in range(0, len(body), 1 << 20):
            writer.write(body[i:i + (1 << 20)])
            await writer.drain()
        writer.write(b".\r\n")
        await writer.drain()
        code = await asyncio.wait_for(reply(reader), 600)
        key = "accepted" if code < 400 else "deferred" if code < 500 else "refused"
        counts[key] += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
        writer.close()
    except (ConnectionError, OSError, asyncio.TimeoutError):
        counts["failed"] += 1


async def main():
    host, port, sessions, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    counts = {"accepted": 0, "deferred": 0, "refused": 0, "failed": 0}
    await asyncio.gather(*(one(host, port, size, counts) for _ in range(sessions)))
    print(" ".join("%s=%d" % kv for kv in counts.items()))


if __name__ == "__main__":
    asyncio.run(main())
