"""asyncio (epoll) server on PORT for one connection: reads everything the client sends
while sending SIZE bytes of `move_stream.stream(SEED)`; prints `got <bytes> <sha256>` when the client
has closed its side, then exits."""
import asyncio
import hashlib
import sys

from move_stream import stream

port, size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])


async def main():
    done = asyncio.Event()

    async def handle(reader, writer):
        async def send():
            for part in stream(seed, size):
                writer.write(part)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        h = hashlib.sha256()
        n = 0
        while True:
            b = await reader.read(1 << 16)
            if not b:
                break
            h.update(b)
            n += len(b)
        await sender
        print("got", n, h.hexdigest(), flush=True)
        writer.close()
        done.set()

    srv = await asyncio.start_server(handle, "0.0.0.0", port)
    print("listening", flush=True)
    await done.wait()
    srv.close()


asyncio.run(main())
