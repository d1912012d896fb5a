#!/usr/bin/env python3
"""Publish to AWS IoT Core through tokensvc's custom authorizer with plain paho-mqtt.

Given only the `mqtt` profile of tokensvc's GET /token answer for an awsiot hub (host,
port, ALPN list, client ID, user name, password, topics, TLS server name) and the CA
bundle to trust, it connects with MQTT 3.1.1 over TLS on port 443 offering the ALPN
protocols the profile lists ("mqtt": AWS IoT Core takes custom-authenticated MQTT on 443
only with it) and publishes to the profile's telemetry topic. No AWS SDK, no AWS
credentials, no key on the device.

    curl -s https://tokensvc.example.com/token -H "Authorization: Bearer $ASSERTION" \
      | jq .mqtt > profile.json
    python3 aws_publish.py profile.json   # CA_FILE=AmazonRootCA1.pem by default

Works with paho-mqtt 1.6 (Debian's python3-paho-mqtt) and 2.x.
Environment: CA_FILE (PEM to trust), MESSAGES (default 1), and for tests only
BROKER_ADDR (host:port to dial instead of the profile's host; TLS still verifies the
profile's server name).
"""
import json
import os
import socket
import ssl
import sys
import threading
import time

import paho.mqtt.client as mqtt


def load_profile(path):
    with open(path) as f:
        p = json.load(f)
    for field in ("host", "port", "clientId", "username", "password", "topics"):
        if field not in p:
            raise SystemExit("profile: no %s" % field)
    return p


def redirect(host, port, addr):
    """Dial addr whenever paho connects to (host, port): tests run the broker on loopback."""
    bhost, bport = addr.rsplit(":", 1)
    real = socket.create_connection

    def create_connection(address, *args, **kwargs):
        if address[0] == host and int(address[1]) == int(port):
            address = (bhost, int(bport))
        return real(address, *args, **kwargs)

    socket.create_connection = create_connection


def new_client(client_id):
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, client_id=client_id,
                           protocol=mqtt.MQTTv311, clean_session=True)
    return mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)


def connect_and_publish(client, p, server_name):
    """Connect client to the profile's endpoint, publish MESSAGES messages (QoS 1) to the
    profile's telemetry topic and disconnect; exit with the reason on any failure."""
    connected = threading.Event()
    result = {}

    def on_connect(c, userdata, flags, rc, *rest):
        result["rc"] = rc
        connected.set()

    def on_disconnect(c, userdata, rc, *rest):
        # Closed before a CONNACK: the TLS or ALPN check refused the connection.
        result.setdefault("rc", "closed before CONNACK")
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    # Until the CONNACK the network loop runs here, so a TLS refusal (a bad certificate
    # alert arrives on the first read with TLS 1.3) ends the program with its reason.
    deadline = time.monotonic() + 15
    try:
        client.connect(server_name, p["port"], keepalive=60)
        while not connected.is_set():
            if time.monotonic() > deadline:
                raise SystemExit("no CONNACK")
            client.loop(timeout=0.5)
    except (ssl.SSLError, OSError) as e:
        raise SystemExit("connection refused: %s" % e)
    client.loop_start()
    try:
        rc = result["rc"]
        if isinstance(rc, str):
            raise SystemExit("connection refused: " + rc)
        if rc != 0:
            raise SystemExit("connection refused: %s" % mqtt.connack_string(int(rc)))
        topic = p["topics"]["publish"]
        for i in range(int(os.environ.get("MESSAGES", "1"))):
            info = client.publish(topic, json.dumps({"seq": i}), qos=1)
            info.wait_for_publish(15)
            if not info.is_published():
                raise SystemExit("message %d: no PUBACK" % i)
            print("published %d to %s" % (i, topic))
        client.disconnect()
    finally:
        client.loop_stop()


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: aws_publish.py profile.json")
    p = load_profile(sys.argv[1])
    server_name = (p.get("tls") or {}).get("serverName") or p["host"]
    if os.environ.get("BROKER_ADDR"):
        redirect(server_name, p["port"], os.environ["BROKER_ADDR"])

    ctx = ssl.create_default_context(cafile=os.environ.get("CA_FILE", "AmazonRootCA1.pem"))
    if p.get("alpn"):
        ctx.set_alpn_protocols(p["alpn"])

    client = new_client(p["clientId"])
    client.tls_set_context(ctx)
    # The token travels in the user name's query string (signing) or in the password.
    client.username_pw_set(p["username"], p["password"] or None)

    connect_and_publish(client, p, server_name)


if __name__ == "__main__":
    main()
