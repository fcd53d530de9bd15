"""A real SMTP server for Kopilka's tests (aiosmtpd on loopback), with faults on demand.

Usage: python smtp_sink.py PORT DIR
Accepted messages land in DIR/maildir (Maildir: each file written whole, then moved into
new/). Faults, read per transaction from files in DIR:
  DIR/fail-421  exists -> every recipient gets "421 try again later" (transient)
  DIR/reject    one address per line -> those get "550 no such user" (permanent)
Prints "ready" on stdout once it listens.
"""
import asyncio
import mailbox
import os
import signal
import sys

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, folder):
        self.folder = folder
        self.box = mailbox.Maildir(os.path.join(folder, "maildir"), create=True)

    def _rejected(self):
        try:
            with open(os.path.join(self.folder, "reject"), encoding="utf-8") as f:
                return {line.strip().lower() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if os.path.exists(os.path.join(self.folder, "fail-421")):
            return "421 4.3.2 service not available, try again later"
        if address.lower() in self._rejected():
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.box.add(envelope.original_content)
        return "250 Message accepted for delivery"


def main():
    port, folder = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Sink(folder), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    loop = asyncio.new_event_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    loop.run_until_complete(stop)
    controller.stop()


if __name__ == "__main__":
    main()
