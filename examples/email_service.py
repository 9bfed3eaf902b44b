#!/usr/bin/env python3
"""The email service of the event-broadcasting sample, in Python with the
standard library only: a durable consumer `email` on `system-events`.

    python3 examples/email_service.py --url http://127.0.0.1:15501,http://127.0.0.1:15502 [--name email-1]

Run two copies: they share the work (each message is leased to one fetch at
a time) and between them send every email once. A message can still come
twice (a copy that dies after sending and before acking), so each handler
first claims the message with `kv.set` `nx` and a 24 h TTL, the value being
this copy's own token; a copy that finds the claim taken by another token
skips it (its own token means a claim whose answer was lost and that was
retried on another node). Messages are acked once handled; one not acked
comes back after `ack_wait_ms`. (A copy that dies between its claim and the
email leaves that email unsent: a real service would claim for the length
of a lease and mark the email sent afterwards.)
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

ROOM = "system-events"
CONSUMER = "email"


class Cluster:
    """Calls any node, moving to the next one while a node is unreachable
    or has no leader (503): every call here is safe to repeat."""

    def __init__(self, urls, api_key=None):
        self.urls = urls
        self.current = 0
        self.api_key = api_key

    def call(self, method, path, body=None, timeout=35):
        deadline = time.monotonic() + 30
        while True:
            url = self.urls[self.current % len(self.urls)] + path
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url, data=data, method=method)
            request.add_header("content-type", "application/json")
            if self.api_key:
                request.add_header("authorization", "Bearer " + self.api_key)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as e:
                if e.code != 503 or time.monotonic() > deadline:
                    raise RuntimeError(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{method} {path}: {e}")
            self.current += 1
            time.sleep(0.2)


class EmailService:
    def __init__(self, cluster, name, work_ms, ack_wait_ms):
        self.cluster = cluster
        self.name = name
        self.token = f"{name}:{uuid.uuid4().hex}"
        self.work_ms = work_ms
        self.ack_wait_ms = ack_wait_ms
        self.handlers = {
            "user.registered": self.send_welcome_email,
            "order.created": self.send_order_confirmation,
            "payment.completed": self.send_payment_receipt,
        }

    def send_welcome_email(self, data):
        return f"welcome email to {data['email']}"

    def send_order_confirmation(self, data):
        return f"order confirmation for {data['orderId']}"

    def send_payment_receipt(self, data):
        return f"payment receipt for {data['paymentId']}"

    def claim(self, message):
        """True if this copy is the first to handle the message."""
        key = f"email-service:sent:{message['id']}"
        body = {"key": key, "value": self.token, "ttl": 86400, "nx": True}
        if self.cluster.call("POST", "/kv/set", body)["written"]:
            return True
        # Taken: by another copy, or by this one in an attempt whose answer
        # was lost when its node died (the call was retried elsewhere).
        try:
            held = self.cluster.call("GET", f"/kv/get/{urllib.parse.quote(key, safe='')}?consistency=strong")
        except RuntimeError:
            return False  # gone (expired): someone handled it a day ago
        return held.get("value") == self.token

    def run(self, idle_exit):
        types = ",".join(self.handlers)
        settings = {"types": types, "ack_wait_ms": self.ack_wait_ms}
        self.cluster.call("PUT", f"/stream/{ROOM}/consumers/{CONSUMER}", settings)
        print(f"[{self.name}] listening on consumer {CONSUMER}", flush=True)
        idle_since = time.monotonic()
        while idle_exit is None or time.monotonic() - idle_since < idle_exit:
            answer = self.cluster.call("POST", f"/stream/{ROOM}/consumers/{CONSUMER}/fetch", {"max": 1, "wait_ms": 1000})
            for message in answer["messages"]:
                idle_since = time.monotonic()
                if self.claim(message):
                    time.sleep(self.work_ms / 1000)  # sending the email
                    what = self.handlers[message["event"]](message["data"])
                    print(f"[{self.name}] offset {message['offset']}: sent {what}", flush=True)
                else:
                    print(f"[{self.name}] offset {message['offset']}: already sent, skipping", flush=True)
                self.cluster.call("POST", f"/stream/{ROOM}/consumers/{CONSUMER}/ack", {"offsets": [message["offset"]]})
        print(f"[{self.name}] idle for {idle_exit}s, stopping", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:15500", help="node URLs, comma-separated")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--name", default="email-1", help="this copy's name, in its output")
    parser.add_argument("--work-ms", type=int, default=20, help="how long sending one email takes")
    parser.add_argument("--ack-wait-ms", type=int, default=30000, help="how long a fetched message is ours")
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        help="stop after this many idle seconds (more than the ack wait: a message whose fetch answer was lost "
        "comes back only then)",
    )
    args = parser.parse_args()
    cluster = Cluster(args.url.split(","), args.api_key)
    EmailService(cluster, args.name, args.work_ms, args.ack_wait_ms).run(args.idle_exit)


if __name__ == "__main__":
    sys.exit(main())
