"""uvloop echo server: asyncio_protocol.py's Protocol on uvloop's event loop."""
import uvloop

import asyncio_protocol

if __name__ == "__main__":
    asyncio_protocol.main(uvloop.new_event_loop)
