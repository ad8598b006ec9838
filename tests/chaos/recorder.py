#!/usr/bin/env python3
"""The primary of the fault tests: an SMTP server that records every message it takes.

Each message is written to the log as a JSON line before the 250 is sent ("got", with the
sending address and the time the DATA command came), and again once the 250 went out
("acked"), so a primary killed between the two shows a delivery the sender never heard
confirmed. The message's id is its X-Chaos-Id header. Killing the process (SIGKILL) takes the
primary down; starting it again appends to the same log.

    recorder.py ADDRESS PORT LOG
"""
import asyncio
import json
import os
import sys
import time


class Log:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)

    def write(self, **fields):
        fields["t"] = time.time()
        self.f.write(json.dumps(fields) + "\n")
        self.f.flush()


async def session(reader, writer, log):
    peer = writer.get_extra_info("peername")[0]

    async def reply(text):
        writer.write((text + "\r\n").encode())
        await writer.drain()

    await reply("220 primary.chaos.test ESMTP recorder")
    rcpts = 0
    sender = None
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                if verb == b"EHLO":
                    await reply("250-primary.chaos.test\r\n250-8BITMIME\r\n250 SIZE 104857600")
                else:
                    await reply("250 primary.chaos.test")
            elif verb == b"MAIL":
                sender, rcpts = line.strip()[10:].decode(errors="replace"), 0
                await reply("250 2.1.0 ok")
            elif verb == b"RCPT":
                if sender is None:
                    await reply("503 5.5.1 MAIL first")
                    continue
                rcpts += 1
                await reply("250 2.1.5 ok")
            elif verb == b"DATA":
                if not rcpts:
                    await reply("503 5.5.1 RCPT first")
                    continue
                started = time.time()
                await reply("354 go ahead")
                chaos_id = None
                size = 0
                while True:
                    data = await reader.readline()
                    if not data:
                        return
                    if data == b".\r\n":
                        break
                    size += len(data)
                    if chaos_id is None and data.lower().startswith(b"x-chaos-id:"):
                        chaos_id = data.split(b":", 1)[1].strip().decode()
                log.write(ev="got", id=chaos_id, peer=peer, started=started, size=size,
                          rcpts=rcpts)
                await reply("250 2.0.0 recorded")
                log.write(ev="acked", id=chaos_id, peer=peer)
                sender, rcpts = None, 0
            elif verb == b"RSET":
                sender, rcpts = None, 0
                await reply("250 2.0.0 ok")
            elif verb == b"NOOP":
                await reply("250 2.0.0 ok")
            elif verb == b"QUIT":
                await reply("221 2.0.0 bye")
                return
            else:
                await reply("502 5.5.2 not implemented")
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def main():
    address, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    log = Log(path)
    server = await asyncio.start_server(lambda r, w: session(r, w, log), address, port,
                                        reuse_address=True, limit=1 << 20)
    log.write(ev="up", pid=os.getpid())
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
