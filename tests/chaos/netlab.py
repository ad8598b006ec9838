"""What the fault harness and the Postfix baseline both stand on: hosts in network namespaces
on one bridge, chaosfs mounts, and the recording primary."""
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/mxraft/target"))
BIN = os.path.join(TARGET, "release")


class LabError(Exception):
    pass


def run(*cmd, check_rc=True, timeout=60):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check_rc and r.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def kill_strays(marker):
    """SIGKILLs every process whose command line mentions `marker` (a run's work directory),
    resuming it first in case it was stopped."""
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and "chaosfs" not in cmdline:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(int(pid), sig)
                except ProcessLookupError:
                    pass


class Lab:
    """Network namespaces on one bridge. The bridge lives in the `hub` namespace, which is
    also where clients (the load, mxraftctl) run."""

    def __init__(self, tag, net):
        self.tag = tag
        self.net = net
        self.netns = []
        self.hub = f"{tag}h"
        self.add_ns(self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "addr", "add", f"{net}.254/24", "dev", "br0")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")

    def add_ns(self, ns):
        run("ip", "netns", "add", ns)
        self.netns.append(ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def add_host(self, name, address):
        """A namespace `<tag><name>` with `address` on an interface linked to the bridge."""
        ns = f"{self.tag}{name}"
        self.add_ns(ns)
        veth = f"{self.tag}v{name}"
        run("ip", "link", "add", veth, "netns", self.hub, "type", "veth", "peer", "name",
            "eth0", "netns", ns)
        run("ip", "-n", self.hub, "link", "set", veth, "master", "br0", "up")
        run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def in_hub(self, *cmd, **kw):
        return run("ip", "netns", "exec", self.hub, *cmd, **kw)

    def wait_port(self, address, port=25, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.in_hub("python3", "-c",
                            f"import socket; socket.create_connection(('{address}', {port}), 1)",
                            check_rc=False)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise LabError(f"nothing listens on {address}:{port}")

    def close(self):
        for ns in reversed(self.netns):
            run("ip", "netns", "del", ns, check_rc=False)


class ChaosFs:
    """A chaosfs mount and its control socket."""

    def __init__(self, mountpoint, control, log_path):
        self.mountpoint = mountpoint
        self.control = control
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "chaosfs"), mountpoint, "--control", control],
            stdout=open(log_path, "a"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not (os.path.ismount(mountpoint) and os.path.exists(control)):
            if time.time() > deadline or self.proc.poll() is not None:
                raise LabError(f"chaosfs did not mount {mountpoint}")
            time.sleep(0.05)

    def ctl(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.control)
            s.sendall((command + "\n").encode())
            answer = s.makefile().readline().strip()
        if not answer.startswith("ok"):
            raise LabError(f"chaosfs {self.mountpoint}: {command}: {answer}")
        return answer

    def stop(self):
        if os.path.ismount(self.mountpoint):
            run("umount", "-l", self.mountpoint, check_rc=False)
        self.proc.kill()
        self.proc.wait()


class Recorder:
    """The recording primary (recorder.py) in namespace `ns`, logging to `path`."""

    def __init__(self, lab, ns, address, path, log_path):
        self.lab, self.ns, self.address, self.path, self.log_path = lab, ns, address, path, log_path
        self.proc = None
        self.up_at = None

    def start(self):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, os.path.join(HERE, "recorder.py"),
             self.address, "25", self.path],
            stdout=open(self.log_path, "a"), stderr=subprocess.STDOUT)
        self.lab.wait_port(self.address)
        self.up_at = time.time()

    def stop(self):
        if self.proc is not None:
            # ip netns exec execs the recorder: this is the recorder's own pid.
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def up(self):
        return self.proc is not None
