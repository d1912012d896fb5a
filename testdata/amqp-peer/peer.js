// An AMQP 1.0 peer, built on rhea, that authenticates devices the way IoT Hub does, for
// the agent's tests (internal/agent/testpeer starts it with node).
//
//   - SASL PLAIN: user {deviceId}@sas.{shortHubName}; password a SAS token that must
//     verify with the device's key (HMAC-SHA256 over enc(sr) "\n" se), be scoped to
//     exactly {hub}/devices/{deviceId} without skn, and not be expired.
//   - SASL ANONYMOUS + CBS: put-token on $cbs (type servicebus.windows.net:sastoken,
//     name = the token's audience) with the same checks; renewable on the open connection.
//   - Multiplexing (gateways): after SASL ANONYMOUS one connection may carry put-tokens
//     for several devices; each device's links are authorized by its own token only.
//   - A device may attach a sending link only to /devices/{itsId}/messages/events, and a
//     receiving link only from /devices/{itsId}/messages/devicebound (C2D).
//   - The moment a token expires (IoT Hub allows a grace period; this peer none) the
//     connection is closed (amqp:unauthorized-access) — or, on a connection that carries
//     several devices, that device's links are detached.
//
// Configuration is the first line on stdin, one JSON object: {hub, hubName, certPem,
// keyPem, keys, maxMessageBytes}. Later lines are commands: {"c2d":{"device":ID,"body":TEXT}} sends a
// cloud-to-device message on the device's open devicebound link or, as IoT Hub does,
// keeps it for the device until one is open (and sendable); a message sent on a link
// that closes before the device settled it is kept again. {"release":{"device":ID,
// "count":N}} makes the device's next N telemetry messages settle as released (not
// accepted: the sender must send them again), each reported as a "released" event; the
// command is acknowledged with a "release-armed" event. {"reject":{"device":ID,
// "condition":COND}} makes the device's next telemetry message settle as rejected with
// that error condition (IoT Hub rejects while throttling, for example), reported as a
// "rejected" event; acknowledged with "reject-armed". As IoT Hub does, a telemetry
// message larger than maxMessageBytes (configuration; default 262144, IoT Hub's 256 KB)
// is rejected with amqp:link:message-size-exceeded, reported the same way.
// Every event is one JSON line on stdout; the first is {"event":"listening","port":N}.
'use strict';

const crypto = require('crypto');
const rhea = require('rhea');

const readline = require('readline');

let cfg;
// Deliveries are settled by the message handler: accepted, or released on command.
const container = rhea.create_container({ id: 'iothub-test-peer', autoaccept: false });
const releaseNext = {}; // device -> telemetry messages still to release
const rejectNext = {}; // device -> conditions to reject its next telemetry messages with

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

// The token check IoT Hub performs. Returns {ok, reason, device, expiry}.
function checkToken(token, wantDevice) {
  const prefix = 'SharedAccessSignature ';
  if (typeof token !== 'string' || !token.startsWith(prefix)) return { ok: false, reason: 'malformed' };
  const fields = {};
  for (const part of token.slice(prefix.length).split('&')) {
    const i = part.indexOf('=');
    if (i < 0) return { ok: false, reason: 'malformed' };
    const name = part.slice(0, i);
    if (name in fields) return { ok: false, reason: 'malformed' };
    fields[name] = part.slice(i + 1);
  }
  if (!fields.sr || !fields.sig || !fields.se) return { ok: false, reason: 'malformed' };
  if ('skn' in fields) return { ok: false, reason: 'scope' }; // a device key token has no skn
  let sr;
  try {
    sr = decodeURIComponent(fields.sr);
  } catch (e) {
    return { ok: false, reason: 'malformed' };
  }
  const m = /^([^/]+)\/devices\/([^/]+)$/.exec(sr);
  if (!m || m[1] !== cfg.hub) return { ok: false, reason: 'scope' };
  const device = m[2];
  if (wantDevice !== undefined && device !== wantDevice) return { ok: false, reason: 'scope' };
  const key = cfg.keys[device];
  if (!key) return { ok: false, reason: 'unknown device' };
  // The signature covers sr exactly as sent (encoded once), "\n", se.
  const want = crypto.createHmac('sha256', Buffer.from(key, 'base64'))
    .update(fields.sr + '\n' + fields.se).digest('base64');
  let got;
  try {
    got = decodeURIComponent(fields.sig);
  } catch (e) {
    return { ok: false, reason: 'malformed' };
  }
  if (got.length !== want.length || !crypto.timingSafeEqual(Buffer.from(got), Buffer.from(want))) {
    return { ok: false, reason: 'signature' };
  }
  const se = Number(fields.se);
  if (!Number.isInteger(se)) return { ok: false, reason: 'malformed' };
  if (Date.now() / 1000 >= se) return { ok: false, reason: 'expired' };
  return { ok: true, device: device, expiry: se };
}

// SASL PLAIN as IoT Hub reads it: the user names the device and the short hub name.
container.sasl_server_mechanisms.PLAIN = function () {
  return {
    outcome: undefined,
    username: undefined,
    start: function (response) {
      const parts = Buffer.from(response).toString('utf8').split('\0');
      const user = parts[1] || '';
      const at = user.indexOf('@sas.');
      let r;
      if (parts.length !== 3 || at < 0 || user.slice(at + 5) !== cfg.hubName) {
        r = { ok: false, reason: 'username' };
      } else {
        r = checkToken(parts[2], user.slice(0, at));
      }
      emit({ event: 'auth', mechanism: 'PLAIN', user: user, ok: r.ok, reason: r.reason });
      this.outcome = r.ok;
      if (r.ok) {
        this.username = user;
        this.device = r.device;
        this.expiry = r.expiry;
      }
    },
  };
};
container.sasl_server_mechanisms.enable_anonymous();

// devices maps each authorized device of a connection to {expiry, timer}.
function authorize(conn, device, expiry) {
  const d = conn.devices[device] || { links: [] };
  if (d.timer) clearTimeout(d.timer);
  d.expiry = expiry;
  d.timer = setTimeout(function () {
    emit({ event: 'expired', device: device });
    if (Object.keys(conn.devices).length <= 1) {
      conn.close({ condition: 'amqp:unauthorized-access', description: 'SAS token expired' });
      return;
    }
    delete conn.devices[device];
    for (const l of d.links) {
      if (l.is_open()) l.close({ condition: 'amqp:unauthorized-access', description: 'SAS token expired' });
    }
  }, Math.max(0, expiry * 1000 - Date.now()));
  conn.devices[device] = d;
}

function clearTimers(conn) {
  for (const d of Object.values(conn.devices || {})) {
    if (d.timer) clearTimeout(d.timer);
  }
}

// deviceOf returns the device an address belongs to when the connection holds its
// token: /devices/{id}/{suffix}.
function deviceOf(conn, address, suffix) {
  const m = /^\/devices\/([^/]+)\/(.+)$/.exec(address || '');
  if (!m || m[2] !== suffix || !conn.devices[m[1]]) return undefined;
  return m[1];
}

const c2dLinks = {};
const c2dQueued = {}; // device -> [body], kept while it has no open devicebound link

function sendC2D(device) {
  const l = c2dLinks[device];
  const q = c2dQueued[device] || [];
  while (q.length > 0 && l && l.is_open() && l.sendable()) {
    const body = q.shift();
    const d = l.send({ message_id: 'c2d-' + Date.now(), body: rhea.message.data_section(Buffer.from(body)) });
    d.c2dBody = body;
    (l.c2dInFlight = l.c2dInFlight || []).push(d);
    emit({ event: 'c2d', device: device, ok: true });
  }
}

container.on('sendable', function (ctx) {
  if (ctx.sender.c2dDevice) sendC2D(ctx.sender.c2dDevice);
});

// An unsettled C2D delivery on a link that goes away is kept for the device again.
function requeueUnsettled(sender) {
  if (!sender.c2dDevice) return;
  const d = sender.c2dDevice;
  for (const delivery of sender.c2dInFlight || []) {
    if (!delivery.settled && !delivery.remote_settled) (c2dQueued[d] = c2dQueued[d] || []).unshift(delivery.c2dBody);
  }
  sender.c2dInFlight = [];
}
container.on('sender_close', function (ctx) { requeueUnsettled(ctx.sender); });
container.on('accepted', function (ctx) {
  const l = ctx.delivery.link;
  if (l && l.c2dInFlight) l.c2dInFlight = l.c2dInFlight.filter(function (d) { return d !== ctx.delivery; });
});

container.on('connection_open', function (ctx) {
  const conn = ctx.connection;
  const mech = conn.sasl_transport && conn.sasl_transport.mechanism;
  conn.cbsReply = {};
  conn.devices = {};
  if (mech && mech.device) {
    conn.plainDevice = mech.device;
    authorize(conn, mech.device, mech.expiry);
  }
  emit({ event: 'open', device: conn.plainDevice || null });
});

container.on('connection_close', function (ctx) {
  clearTimers(ctx.connection);
});

container.on('disconnected', function (ctx) {
  for (const device of Object.keys(c2dLinks)) {
    if (c2dLinks[device].connection === ctx.connection) requeueUnsettled(c2dLinks[device]);
  }
  clearTimers(ctx.connection);
});

// The device's sender (our receiver): $cbs or its own telemetry address only.
container.on('receiver_open', function (ctx) {
  const conn = ctx.connection;
  const target = ctx.receiver.remote.attach.target;
  const address = target && target.address;
  ctx.receiver.set_target({ address: address });
  if (address === '$cbs') return;
  const device = deviceOf(conn, address, 'messages/events');
  const ok = device !== undefined;
  emit({ event: 'link', address: address, ok: ok, device: device });
  if (ok) {
    ctx.receiver.device = device;
    conn.devices[device].links.push(ctx.receiver);
  } else {
    ctx.receiver.close({ condition: 'amqp:unauthorized-access', description: 'not authorized for ' + address });
  }
});

// The device's receiver (our sender): only the $cbs reply link.
container.on('sender_open', function (ctx) {
  const source = ctx.sender.remote.attach.source;
  const target = ctx.sender.remote.attach.target;
  ctx.sender.set_source({ address: source && source.address });
  if (source && source.address === '$cbs' && target && target.address) {
    ctx.connection.cbsReply[target.address] = ctx.sender;
    return;
  }
  const address = source && source.address;
  if (/^\/devices\/[^/]+\/messages\/devicebound$/.test(address || '')) {
    const device = deviceOf(ctx.connection, address, 'messages/devicebound');
    emit({ event: 'link', address: address, ok: device !== undefined, device: device });
    if (device === undefined) {
      ctx.sender.close({ condition: 'amqp:unauthorized-access', description: 'not authorized for ' + address });
      return;
    }
    ctx.connection.devices[device].links.push(ctx.sender);
    ctx.sender.c2dDevice = device;
    c2dLinks[device] = ctx.sender;
    return;
  }
  ctx.sender.close({ condition: 'amqp:not-allowed', description: 'no such source' });
});

container.on('message', function (ctx) {
  const conn = ctx.connection;
  const target = ctx.receiver.target && ctx.receiver.target.address;
  const msg = ctx.message;
  if (target === '$cbs') {
    ctx.delivery.accept();
    const props = msg.application_properties || {};
    let r;
    if (props.operation !== 'put-token' || props.type !== 'servicebus.windows.net:sastoken') {
      r = { ok: false, reason: 'bad request' };
    } else {
      r = checkToken(msg.body);
      if (r.ok && props.name !== cfg.hub + '/devices/' + r.device) r = { ok: false, reason: 'scope' };
      if (r.ok && conn.plainDevice !== undefined && conn.plainDevice !== r.device) r = { ok: false, reason: 'scope' };
    }
    const renewal = r.ok && conn.devices[r.device] !== undefined;
    emit({ event: 'cbs', ok: r.ok, reason: r.reason, device: r.device, renewal: renewal });
    if (r.ok) authorize(conn, r.device, r.expiry);
    const reply = conn.cbsReply[msg.reply_to];
    if (reply) {
      reply.send({
        correlation_id: msg.message_id,
        application_properties: {
          'status-code': rhea.types.wrap_int(r.ok ? 200 : 401),
          'status-description': r.ok ? 'OK' : r.reason,
        },
      });
    }
    return;
  }
  let body = msg.body;
  if (body && body.typecode === 0x75) body = body.content; // a data section
  const device = ctx.receiver.device;
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
  const size = Buffer.isBuffer(body) ? body.length : Buffer.byteLength(text);
  const limit = cfg.maxMessageBytes || 262144;
  let condition;
  if (size > limit) condition = 'amqp:link:message-size-exceeded';
  else if (rejectNext[device] && rejectNext[device].length > 0) condition = rejectNext[device].shift();
  if (condition) {
    ctx.delivery.reject({ condition: condition, description: 'message of ' + size + ' bytes rejected' });
    emit({ event: 'rejected', device: device, reason: condition, body: text.slice(0, 64) });
    return;
  }
  if (releaseNext[device] > 0) {
    releaseNext[device]--;
    ctx.delivery.release();
    emit({ event: 'released', device: device, body: Buffer.isBuffer(body) ? body.toString('utf8') : String(body) });
    return;
  }
  ctx.delivery.accept();
  emit({
    event: 'message',
    device: ctx.receiver.device,
    body: Buffer.isBuffer(body) ? body.toString('utf8') : String(body),
    properties: msg.application_properties || {},
  });
});

container.on('error', function (err) {
  emit({ event: 'error', error: String(err && err.message ? err.message : err) });
});

function command(c) {
  if (c.reject) {
    (rejectNext[c.reject.device] = rejectNext[c.reject.device] || []).push(c.reject.condition);
    emit({ event: 'reject-armed', device: c.reject.device });
  }
  if (c.release) {
    releaseNext[c.release.device] = (releaseNext[c.release.device] || 0) + c.release.count;
    emit({ event: 'release-armed', device: c.release.device });
  }
  if (c.c2d) {
    const device = c.c2d.device;
    (c2dQueued[device] = c2dQueued[device] || []).push(c.c2d.body);
    const l = c2dLinks[device];
    if (!(l && l.is_open() && l.sendable())) emit({ event: 'c2d', device: device, ok: false, queued: true });
    sendC2D(device);
  }
}

function listen() {
  const server = container.listen({
    host: '127.0.0.1',
    port: 0,
    transport: 'tls',
    cert: cfg.certPem,
    key: cfg.keyPem,
    require_sasl: true,
  });
  server.on('listening', function () {
    emit({ event: 'listening', port: server.address().port });
  });
}

readline.createInterface({ input: process.stdin }).on('line', function (line) {
  if (!line.trim()) return;
  if (cfg === undefined) {
    cfg = JSON.parse(line);
    listen();
    return;
  }
  try {
    command(JSON.parse(line));
  } catch (e) {
    emit({ event: 'error', error: 'command: ' + e.message });
  }
});
process.on('SIGTERM', function () {
  process.exit(0);
});
