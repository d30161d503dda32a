"""Extra "hosts" on this machine for multi-machine tests: Linux network namespaces on a bridge (root only).

`Network` makes a bridge with the address `host_ip` and one namespace per name, each with its own address
on the bridge and a route to it: a process started with `Network.command(name, …)` has its own loopback
and reaches the rest only through the bridge, as another machine on the LAN would. Services of this
machine that listen on loopback only (Postgres, RabbitMQ) are exposed on the bridge by `forward`, a
plain TCP relay.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import uuid
from contextlib import contextmanager


def available() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    def __init__(self, names: list[str], subnet: int):
        tag = uuid.uuid4().hex[:5]
        self.bridge = f"imbr{tag}"
        self.host_ip = f"10.{subnet}.0.1"
        self.namespaces = {name: f"imago-{name}-{tag}" for name in names}
        self.addresses = {name: f"10.{subnet}.0.{11 + i}" for i, name in enumerate(names)}
        self._links: list[str] = []

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (name, namespace) in enumerate(self.namespaces.items()):
            link = f"{self.bridge}v{i}"
            _ip("netns", "add", namespace)
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self._links.append(link)
            _ip("link", "set", link, "master", self.bridge, "up")
            _ip("-n", namespace, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            _ip("-n", namespace, "link", "set", "eth0", "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "route", "add", "default", "via", self.host_ip)

    def destroy(self) -> None:
        for namespace in self.namespaces.values():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        for link in self._links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def command(self, name: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[name], *argv]


@contextmanager
def network(names: list[str], subnet: int = 77):
    net = Network(names, subnet)
    try:
        net.create()
        yield net
    finally:
        net.destroy()


@contextmanager
def forward(listen_host: str, listen_port: int, target_host: str, target_port: int, delay_s: float = 0.0):
    """Relay TCP connections from listen_host:listen_port to target_host:target_port until the block ends.
    With `delay_s`, what each side sends arrives that much later (a distant server: a request and its answer
    take 2 × `delay_s` more; the kernel's netem would do it, but this machine's kernel has no netem)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, asyncio.AbstractServer] = {}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if delay_s:
                    await asyncio.sleep(delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    async def serve() -> None:
        holder["server"] = await asyncio.start_server(relay, listen_host, listen_port)
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError(f"could not listen on {listen_host}:{listen_port}")
    async def shut_down() -> None:
        holder["server"].close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.stop()

    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(shut_down(), loop)
        thread.join(10)
        loop.close()
