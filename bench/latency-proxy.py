#!/usr/bin/env python3
"""A TCP proxy on loopback that delays every byte by a fixed time in each direction.

    latency-proxy.py LISTEN_PORT UPSTREAM_PORT DELAY_MS

Each direction's bytes are delivered DELAY_MS after they were read, in order, so a round
trip through it costs 2 x DELAY_MS more, and throughput is not limited (a link with a long
round trip, not a slow one). Used by bench/latency.sh; runs until killed.
"""
import asyncio
import sys
import time


async def pump(reader, writer, delay):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            read_at, data = await queue.get()
            if data is None:
                writer.close()
                return
            wait = read_at + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    while True:
        data = await reader.read(65536)
        queue.put_nowait((time.monotonic(), data or None))
        if not data:
            break
    await task


async def main(listen, upstream, delay):
    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(
            pump(client_reader, server_writer, delay),
            pump(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]) / 1000))
