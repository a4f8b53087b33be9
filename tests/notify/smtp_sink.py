"""An SMTP server for the notification tests (tests/it/notify.rs): aiosmtpd on 127.0.0.1:PORT,
writing each message it receives to DIR/<n>.json (envelope, subject, Message-ID, plain body).

Usage: smtp_sink.py PORT DIR. Prints "ready" once it listens; runs until killed.
"""

import email
import json
import os
import sys
import time
from email import policy

from aiosmtpd.controller import Controller


class Record:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(preferencelist=("plain",))
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "messageId": str(message["message-id"]),
            "body": body.get_content() if body is not None else "",
        }
        # Written whole, then renamed: the test never reads half a message.
        partial = os.path.join(self.directory, f".{self.count}.partial")
        with open(partial, "w") as out:
            json.dump(record, out)
        os.rename(partial, os.path.join(self.directory, f"{self.count}.json"))
        self.count += 1
        return "250 OK"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    controller = Controller(Record(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
