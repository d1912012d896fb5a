// An AMQP 1.0 peer, built on rhea, that authenticates devices the way IoT Hub does, for
// the agent's tests (internal/agent/testpeer starts it with node).
//
//   - SASL PLAIN: user {deviceId}@sas.{shortHubName}; password a SAS token that must
//     verify with the device's key (HMAC-SHA256 over enc(sr) "\n" se), be scoped to
//     exactly {hub}/devices/{deviceId} without skn, and not be expired.
//   - SASL ANONYMOUS + CBS: put-token on $cbs (type servicebus.windows.net:sastoken,
//     name = the token's audience) with the same checks; renewable on the open connection.
//   - A device may attach a sending link only to /devices/{itsId}/messages/events.
//   - The connection is closed (amqp:unauthorized-access) the moment its token expires:
//     IoT Hub does, after a grace period; this peer allows none.
//
// Configuration is one JSON object on stdin: {hub, hubName, certPem, keyPem, keys}.
// Every event is one JSON line on stdout; the first is {"event":"listening","port":N}.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const rhea = require('rhea');

const cfg = JSON.parse(fs.readFileSync(0, 'utf8'));
const container = rhea.create_container({ id: 'iothub-test-peer' });

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

function armExpiry(conn) {
  if (conn.expiryTimer) clearTimeout(conn.expiryTimer);
  const ms = conn.expiry * 1000 - Date.now();
  conn.expiryTimer = setTimeout(function () {
    emit({ event: 'expired', device: conn.device });
    conn.close({ condition: 'amqp:unauthorized-access', description: 'SAS token expired' });
  }, Math.max(0, ms));
}

container.on('connection_open', function (ctx) {
  const conn = ctx.connection;
  const mech = conn.sasl_transport && conn.sasl_transport.mechanism;
  conn.cbsReply = {};
  if (mech && mech.device) {
    conn.device = mech.device;
    conn.expiry = mech.expiry;
    armExpiry(conn);
  }
  emit({ event: 'open', device: conn.device || null });
});

container.on('connection_close', function (ctx) {
  if (ctx.connection.expiryTimer) clearTimeout(ctx.connection.expiryTimer);
});

container.on('disconnected', function (ctx) {
  if (ctx.connection.expiryTimer) clearTimeout(ctx.connection.expiryTimer);
});

// The device's sender (our receiver): $cbs or its own telemetry address only.
container.on('receiver_open', function (ctx) {
  const conn = ctx.connection;
  const target = ctx.receiver.remote.attach.target;
  const address = target && target.address;
  ctx.receiver.set_target({ address: address });
  if (address === '$cbs') return;
  const ok = conn.device !== undefined && address === '/devices/' + conn.device + '/messages/events';
  emit({ event: 'link', address: address, ok: ok });
  if (!ok) {
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
  ctx.sender.close({ condition: 'amqp:not-allowed', description: 'no such source' });
});

container.on('message', function (ctx) {
  const conn = ctx.connection;
  const target = ctx.receiver.target && ctx.receiver.target.address;
  const msg = ctx.message;
  if (target === '$cbs') {
    const props = msg.application_properties || {};
    let r;
    if (props.operation !== 'put-token' || props.type !== 'servicebus.windows.net:sastoken') {
      r = { ok: false, reason: 'bad request' };
    } else {
      r = checkToken(msg.body);
      if (r.ok && props.name !== cfg.hub + '/devices/' + r.device) r = { ok: false, reason: 'scope' };
      if (r.ok && conn.device !== undefined && conn.device !== r.device) r = { ok: false, reason: 'scope' };
    }
    emit({ event: 'cbs', ok: r.ok, reason: r.reason, device: r.device, renewal: conn.device !== undefined });
    if (r.ok) {
      conn.device = r.device;
      conn.expiry = r.expiry;
      armExpiry(conn);
    }
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
  emit({
    event: 'message',
    device: conn.device,
    body: Buffer.isBuffer(body) ? body.toString('utf8') : String(body),
    properties: msg.application_properties || {},
  });
});

container.on('error', function (err) {
  emit({ event: 'error', error: String(err && err.message ? err.message : err) });
});

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
process.stdin.on('end', function () {}); // config already read
process.on('SIGTERM', function () {
  process.exit(0);
});
