# tokensvc client for small devices: MicroPython on an ESP32, and CPython (the tests run
# this very file). It signs an HS256 assertion, calls GET /token (compact text form),
# corrects its clock from the service when it has none, and publishes telemetry to IoT
# Hub over MQTT 3.1.1 with TLS -- with no SDK and no key on the device beyond the
# HS256 bootstrap secret.
#
# Configure the constants below (or, under CPython, the environment variables of the
# same names). On the board, copy this file and call main() from boot.py / main.py
# after Wi-Fi is up.
try:
    import ubinascii as binascii
except ImportError:
    import binascii
try:
    import ujson as json
except ImportError:
    import json
try:
    import usocket as socket
except ImportError:
    import socket
import hashlib
import os
import ssl
import struct
import time

try:
    _env = os.environ
except AttributeError:  # MicroPython has no environment
    _env = {}

TOKENSVC_URL = _env.get("TOKENSVC_URL", "https://tokensvc.example.com")
DEVICE_ID = _env.get("DEVICE_ID", "esp32-0001")
DEVICE_SECRET = _env.get("DEVICE_SECRET", "")  # the HS256 secret tokensvc returned once
AUDIENCE = _env.get("AUDIENCE", "tokensvc")
CA_FILE = _env.get("CA_FILE", "ca.pem")  # trusted for tokensvc and the hub (PEM)
BROKER_ADDR = _env.get("BROKER_ADDR", "")  # host:port to dial instead of the profile's
MESSAGES = int(_env.get("MESSAGES", "3"))
# "1": sign a server-issued nonce (POST /token/nonce) instead of iat/exp, so a board whose
# clock is wrong gets in on the first try.
USE_NONCE = _env.get("USE_NONCE", "") == "1"
# Simulates a board whose clock is wrong (tests only).
_DEVICE_SKEW = int(_env.get("DEVICE_CLOCK_SKEW", "0"))

# time.time() counts from 2000-01-01 on most MicroPython ports, from 1970 on CPython;
# SAS tokens and JWTs use 1970.
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
_clock_offset = 0  # service time minus device time, learned from the service


def now():
    return int(time.time()) + EPOCH_OFFSET + _DEVICE_SKEW + _clock_offset


def b64url(b):
    return binascii.b2a_base64(b).strip().replace(b"+", b"-").replace(b"/", b"_").rstrip(b"=")


def hmac_sha256(key, msg):
    # MicroPython has no hmac module: RFC 2104 by hand.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + b"\x00" * (64 - len(key))
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + msg).digest()
    return hashlib.sha256(bytes(k ^ 0x5C for k in key) + inner).digest()


def assertion(nonce=None):
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    if nonce:
        # The nonce stands in for iat/exp/jti: no clock needed.
        claims = {"iss": DEVICE_ID, "sub": DEVICE_ID, "aud": AUDIENCE, "nonce": nonce}
    else:
        iat = now()
        jti = binascii.hexlify(os.urandom(12)).decode()
        claims = {"iss": DEVICE_ID, "sub": DEVICE_ID, "aud": AUDIENCE, "iat": iat, "exp": iat + 120, "jti": jti}
    payload = b64url(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    return (signing_input + b"." + b64url(hmac_sha256(DEVICE_SECRET.encode(), signing_input))).decode()


def _ca_data():
    with open(CA_FILE) as f:
        return f.read()


def tls(sock, host):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=_ca_data())
    except TypeError:  # MicroPython wants DER
        pem = _ca_data()
        der = binascii.a2b_base64("".join(l for l in pem.splitlines() if "-----" not in l))
        ctx.load_verify_locations(cadata=der)
    return ctx.wrap_socket(sock, server_hostname=host)


def _split_url(url):
    scheme, rest = url.split("://", 1)
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    return scheme, host, int(port or (443 if scheme == "https" else 80)), "/" + path


def http_get(url, headers):
    return http_request("GET", url, headers)


def http_request(method, url, headers):
    scheme, host, port, path = _split_url(url)
    addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    s.connect(addr)
    if scheme == "https":
        s = tls(s, host)
    req = "%s %s HTTP/1.0\r\nHost: %s\r\n" % (method, path, host)
    if method == "POST":
        req += "Content-Length: 0\r\n"
    for k in headers:
        req += "%s: %s\r\n" % (k, headers[k])
    s.write((req + "\r\n").encode()) if hasattr(s, "write") else s.sendall((req + "\r\n").encode())
    data = b""
    while True:
        chunk = s.read(1024) if hasattr(s, "read") else s.recv(1024)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body.decode()


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def http_date_to_unix(d):
    # "Sun, 22 Nov 2026 12:00:00 GMT"
    p = d.split()
    hh, mm, ss = [int(x) for x in p[4].split(":")]
    y, mo, day = int(p[3]), _MONTHS.index(p[2]) + 1, int(p[1])
    # days from civil (Howard Hinnant), so no mktime epoch trouble
    y2 = y - (mo <= 2)
    era = y2 // 400
    yoe = y2 - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


def get_token():
    """GET /token in the compact text form; returns a dict of its key=value lines."""
    global _clock_offset
    for _ in range(2):
        nonce = None
        if USE_NONCE:
            status, _, body = http_request("POST", TOKENSVC_URL + "/token/nonce", {"Accept": "application/json"})
            if status != 200:
                raise OSError("POST /token/nonce: HTTP %d" % status)
            nonce = json.loads(body)["nonce"]
        status, hdrs, body = http_get(TOKENSVC_URL + "/token",
                                      {"Authorization": "Bearer " + assertion(nonce), "Accept": "text/plain"})
        if status == 401 and "date" in hdrs:
            # A device without a real-time clock: take the service's time and try once more.
            skew = http_date_to_unix(hdrs["date"]) - now()
            if abs(skew) > 10:
                _clock_offset += skew
                continue
        if status != 200:
            raise OSError("GET /token: HTTP %d" % status)
        t = {}
        for line in body.split("\n"):
            k, _, v = line.partition("=")
            if k:
                t[k] = v
        _clock_offset += int(t["serverTime"]) - now()
        return t
    raise OSError("GET /token: refused")


# --- a minimal MQTT 3.1.1 client (CONNECT, PUBLISH QoS 1, DISCONNECT) ---

def _mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _mqtt_packet(kind, body):
    n, rem = len(body), b""
    while True:
        byte = n % 128
        n //= 128
        rem += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([kind]) + rem + body


def _read_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.read(n - len(b)) if hasattr(s, "read") else s.recv(n - len(b))
        if not c:
            raise OSError("MQTT connection closed")
        b += c
    return b


def _send(s, data):
    s.write(data) if hasattr(s, "write") else s.sendall(data)


def mqtt_connect(t):
    host, port = t["mqttHost"], int(t["mqttPort"])
    if BROKER_ADDR:
        dial_host, _, dial_port = BROKER_ADDR.rpartition(":")
        addr = socket.getaddrinfo(dial_host, int(dial_port))[0][-1]
    else:
        addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    s.connect(addr)
    s = tls(s, host)
    flags = 0x80 | 0x40 | 0x02  # user name, password, clean session
    body = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body += _mqtt_str(t["mqttClientId"]) + _mqtt_str(t["mqttUsername"]) + _mqtt_str(t["token"])
    _send(s, _mqtt_packet(0x10, body))
    ack = _read_exact(s, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        raise OSError("MQTT CONNACK refused: %d" % ack[3])
    return s


def mqtt_publish(s, topic, payload, pid):
    body = _mqtt_str(topic) + struct.pack("!H", pid) + payload
    _send(s, _mqtt_packet(0x32, body))  # PUBLISH, QoS 1
    ack = _read_exact(s, 4)
    if ack[0] != 0x40 or struct.unpack("!H", ack[2:4])[0] != pid:
        raise OSError("no PUBACK")


def main():
    t = get_token()
    expires = now() + int(t["expiresIn"])
    print("token for %s valid %ss, refresh in %ss" % (DEVICE_ID, t["expiresIn"], t["refreshIn"]))
    s = mqtt_connect(t)
    for i in range(MESSAGES):
        body = json.dumps({"seq": i, "uptime": time.ticks_ms() if hasattr(time, "ticks_ms") else 0})
        mqtt_publish(s, t["mqttPublish"] + "%24.ct=application%2Fjson&%24.ce=utf-8", body.encode(), i + 1)
    _send(s, b"\xe0\x00")  # DISCONNECT
    s.close()
    print("published %d messages; token expires at %d" % (MESSAGES, expires))


if __name__ == "__main__":
    main()
