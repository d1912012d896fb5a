#!/usr/bin/env python3
"""Publish to AWS IoT Core with a short-lived X.509 device certificate, as a typical AWS
IoT Python program does: an SSL context that trusts the root CA file, presents the
certificate and private-key files, and offers ALPN x-amzn-mqtt-ca (AWS IoT Core takes
certificate-authenticated MQTT on port 443 only with it; on 8883 no ALPN is needed).

The files come from tokenagent in certificate mode (it generates the key on the device,
renews the certificate before it expires and rewrites the files):

    tokenagent -hub-mode certificate -out-dir /var/lib/tokenagent ...
    CERT_FILE=/var/lib/tokenagent/device.crt KEY_FILE=/var/lib/tokenagent/device.key \
      CA_FILE=AmazonRootCA1.pem python3 aws_iot_cert.py /var/lib/tokenagent/mqtt.json

The profile (the `mqtt` object of the POST /token/certificate answer; the agent writes
it as mqtt.json) gives host, port, ALPN list, client ID and topics; its user name and
password are empty for certificates. A program that reads the files once per connection
picks up a renewed certificate when it reconnects.

Works with paho-mqtt 1.6 (Debian's python3-paho-mqtt) and 2.x.
Environment: CERT_FILE (PEM certificate, then its chain; default device.crt), KEY_FILE
(PEM private key; default device.key), CA_FILE (PEM to trust for the broker; default
AmazonRootCA1.pem), MESSAGES (default 1), and for tests only BROKER_ADDR (host:port to
dial instead of the profile's host; TLS still verifies the profile's server name).
"""
import os
import ssl
import sys

from aws_publish import connect_and_publish, load_profile, new_client, redirect


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: aws_iot_cert.py mqtt.json")
    p = load_profile(sys.argv[1])
    server_name = (p.get("tls") or {}).get("serverName") or p["host"]
    if os.environ.get("BROKER_ADDR"):
        redirect(server_name, p["port"], os.environ["BROKER_ADDR"])

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=os.environ.get("CA_FILE", "AmazonRootCA1.pem"))
    ctx.load_cert_chain(certfile=os.environ.get("CERT_FILE", "device.crt"),
                        keyfile=os.environ.get("KEY_FILE", "device.key"))
    if p.get("alpn"):
        ctx.set_alpn_protocols(p["alpn"])  # ["x-amzn-mqtt-ca"] on port 443

    client = new_client(p["clientId"])
    client.tls_set_context(ctx)
    # No user name or password: the certificate is the credential.
    connect_and_publish(client, p, server_name)


if __name__ == "__main__":
    main()
