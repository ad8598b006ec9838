#!/usr/bin/env python3
"""Raw SMTP scenarios for the black-box front-door test: byte sequences that swaks cannot send.

    rawsmtp.py SCENARIO HOST PORT [ARGS...]

Each scenario talks to a running node, checks the replies and exits 0, or prints what went
wrong and exits 1. Standard library only.
"""

import socket
import ssl
import sys
import time


class Fail(Exception):
    pass


class Conn:
    def __init__(self, host, port, timeout=30):
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Fail("connection closed while waiting for a reply (had %r)" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One whole reply: its lines, the last one with a space after the code."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def command(self, line, prefix, what):
        """Sends one command line and expects a reply starting with `prefix`."""
        self.send(line + b"\r\n")
        return self.expect(prefix, what)

    def expect(self, prefix, what):
        r = self.reply()
        if not r[-1].startswith(prefix):
            raise Fail("%s: expected %r, got %r" % (what, prefix, r))
        return r

    def closed(self, within):
        """True if the server closes the connection (after any pending replies) within `within`
        seconds."""
        self.sock.settimeout(within)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except socket.timeout:
            return False

    def starttls(self, host, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = False
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        if self.buf:
            raise Fail("the server sent %r in plain text after 220" % self.buf)


def greeted(host, port, name):
    """A connection past the greeting and EHLO; returns it with the EHLO reply lines."""
    c = Conn(host, port)
    c.expect("220", "greeting")
    c.send(b"EHLO %s\r\n" % name.encode())
    return c, c.expect("250", "EHLO")


def starttls_injection(host, port, cafile):
    """Commands pipelined after STARTTLS in the same write must not run (CVE-2011-0411), the
    session starts over in TLS, and a second STARTTLS is refused."""
    c, _ = greeted(host, port, "inject.test")
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<inject@client.test>\r\n")
    c.expect("220", "STARTTLS")
    c.starttls(host, cafile)
    # The first reply in TLS must be the one to this EHLO, not to the injected RSET or MAIL.
    r = c.command(b"EHLO inject.test", "250", "EHLO after TLS")
    if len(r) < 2 or "STARTTLS" in " ".join(r):
        raise Fail("EHLO after TLS: expected the extension list without STARTTLS, got %r" % r)
    c.command(b"RCPT TO:<user1@example.test>", "503 5.5.1",
              "RCPT after TLS (the injected MAIL must not have run)")
    c.command(b"STARTTLS", "503 5.5.1", "second STARTTLS")
    c.command(b"QUIT", "221", "QUIT")


def pipelined_data(host, port):
    """The message sent in the same write as DATA, before the 354: refused and disconnected."""
    c, _ = greeted(host, port, "pipe.test")
    c.send(b"MAIL FROM:<pipe@client.test>\r\nRCPT TO:<user1@example.test>\r\n")
    c.expect("250", "MAIL")
    c.expect("250", "RCPT")
    c.send(b"DATA\r\nSubject: early\r\n\r\ntoo early\r\n.\r\n")
    c.expect("554 5.5.0", "DATA with the message already sent")
    if not c.closed(10):
        raise Fail("the session stayed open after 554 5.5.0")


def long_command(host, port):
    """A command line over 512 octets: 500 5.5.2, and the session goes on."""
    c = Conn(host, port)
    c.expect("220", "greeting")
    c.send(b"NOOP " + b"x" * 600 + b"\r\n")
    c.expect("500 5.5.2", "600-octet command")
    c.command(b"NOOP", "250", "NOOP after the long line")


def mail_size(host, port, size):
    """MAIL with a SIZE= over the limit: 552 5.3.4 before any data is sent."""
    c, ehlo = greeted(host, port, "size.test")
    if not any(l[4:].startswith("SIZE ") for l in ehlo):
        raise Fail("EHLO does not advertise SIZE: %r" % ehlo)
    c.send(b"MAIL FROM:<size@client.test> SIZE=%d\r\n" % int(size))
    c.expect("552 5.3.4", "MAIL with SIZE=%s" % size)


def idle(host, port, limit):
    """A client that says nothing gets 421 4.4.2 and is disconnected within `limit` seconds."""
    start = time.monotonic()
    c = Conn(host, port, timeout=float(limit))
    c.expect("220", "greeting")
    try:
        c.expect("421 4.4.2", "idle client")
    except socket.timeout:
        raise Fail("no 421 within %s s" % limit)
    if not c.closed(5):
        raise Fail("the session stayed open after 421")
    print("idle client cut off after %.1f s" % (time.monotonic() - start))


def trickle(host, port, limit):
    """A client sending its message one byte per second is cut off with 421 4.4.2 within
    `limit` seconds, and nothing is queued (the caller checks the queue)."""
    c, _ = greeted(host, port, "slow.test")
    c.command(b"MAIL FROM:<slow@client.test>", "250", "MAIL")
    c.command(b"RCPT TO:<user1@example.test>", "250", "RCPT")
    c.command(b"DATA", "354", "DATA")
    start = time.monotonic()
    message = b"Subject: slow\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n"
    c.sock.settimeout(1.0)
    sent = 0
    cut = False
    while not cut and sent < len(message) and time.monotonic() - start < float(limit):
        try:
            c.send(message[sent:sent + 1])
            sent += 1
        except OSError:
            cut = True
            break
        try:
            chunk = c.sock.recv(65536)
            if not chunk:
                cut = True
            c.buf += chunk
            cut = cut or b"\r\n" in c.buf
        except socket.timeout:
            pass
    elapsed = time.monotonic() - start
    if not cut:
        raise Fail("not cut off after %.1f s and %d of %d bytes" % (elapsed, sent, len(message)))
    c.sock.settimeout(5)
    try:
        c.expect("421 4.4.2", "trickling client")
    except Fail:
        if c.buf:
            raise
        # The reply may be lost when the client's last write hit a closed socket.
    print("trickling client cut off after %.1f s and %d bytes" % (elapsed, sent))


SCENARIOS = {
    "starttls-injection": starttls_injection,
    "pipelined-data": pipelined_data,
    "long-command": long_command,
    "mail-size": mail_size,
    "idle": idle,
    "trickle": trickle,
}


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in SCENARIOS:
        print("usage: rawsmtp.py {%s} HOST PORT [ARGS...]" % ",".join(SCENARIOS), file=sys.stderr)
        return 2
    try:
        SCENARIOS[sys.argv[1]](*sys.argv[2:])
    except (Fail, OSError) as e:
        print("%s: %s" % (sys.argv[1], e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
