"""uvloop echo server: asyncio_streams.py's streams on uvloop's event loop."""
import uvloop

import asyncio_streams

if __name__ == "__main__":
    asyncio_streams.main(uvloop.new_event_loop)
