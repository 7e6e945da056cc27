"""The load-generator processes: each runs one client class and answers the parent's commands
over a pipe (`serve`); `ClientProcess` drives one from the parent, `Clients` several as one."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def serve(conn, client) -> None:
    """Answer the parent's commands until `close`; any client class with `dispatch` will do."""
    loop = asyncio.get_running_loop()
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        try:
            out = await client.dispatch(cmd, arg)
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(out)
        if cmd == "close":
            return


def worker_main(conn, factory: str) -> None:
    import importlib

    from bench.common import raise_nofile

    raise_nofile()
    module, name = factory.split(":")
    client = getattr(importlib.import_module(module), name)()
    try:
        import uvloop

        uvloop.run(serve(conn, client))
    except ImportError:
        asyncio.run(serve(conn, client))


class ClientProcess:
    """A load-generator process, driven from the parent with blocking calls.

    `factory` ("module:Class") is the client class the process runs: `bench.client:Client`
    for the workloads, `bench.soak_client:SoakClient` for the soak.
    """

    def __init__(self, factory: str = "bench.client:Client") -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, factory), daemon=True)
        self.proc.start()
        child.close()

    def send(self, cmd: str, arg: Any = None) -> None:
        self.conn.send((cmd, arg))

    def recv(self, timeout: float = 600) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError("load generator did not answer")
        out = self.conn.recv()
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError(f"load generator: {out['error']}")
        return out

    def call(self, cmd: str, arg: Any = None, timeout: float = 600) -> dict[str, Any]:
        self.send(cmd, arg)
        return self.recv(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(Exception):
                self.call("close", timeout=15)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


class Clients:
    """Several load-generator processes used as one; stops them all on exit."""

    def __init__(self, n: int, factory: str = "bench.client:Client") -> None:
        self.procs: list[ClientProcess] = []
        try:
            for _ in range(n):
                self.procs.append(ClientProcess(factory))
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def all(self, cmd: str, args: list[Any], timeout: float = 600) -> list[dict[str, Any]]:
        for proc, arg in zip(self.procs, args, strict=True):
            proc.send(cmd, arg)
        return [proc.recv(timeout) for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
