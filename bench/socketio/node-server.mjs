// The Node.js reference server of bench/socketio.sh: npm `socket.io` 4.8 with the events the
// benchmark drives on `atom serve`, and nothing else, so that the two are compared on the
// same work.
//
// - Handshake: `auth.token` is `<claims>.<mac>`, where claims is base64url JSON
//   `{"u": user_id, "c": [conversation ids]}` and mac is HMAC-SHA256 over the claims part with
//   BENCH_NODE_SECRET (hex), compared in constant time. It stands in for atom's access JWT
//   and membership lookup; a bad token gets the connect error `unauthorized`, as on atom.
// - On connect the socket joins `user:<id>` and `conversation:<id>` for each conversation of
//   its claims (atom joins the rooms of the user's conversations from the database).
// - `message:send {conversation_id, client_msg_id, body}` (acked): membership checked, the
//   message kept in memory with the next per-conversation seq (a retried client_msg_id gets
//   the first one back), acked `{ok, message, duplicate}`, then broadcast to the room as
//   `message:new {message}`.
// - `sync {positions}` is acked `{ok: true, positions: {}}`: the reference keeps no delivery
//   positions and replays nothing (atom needs a sync before it delivers live messages).
//
// Env: PORT, BENCH_NODE_SECRET, BENCH_CONNECT_TIMEOUT_MS (how long an Engine.IO session may
// wait for its Socket.IO CONNECT; socket.io's `connectTimeout`). GET /health answers 200.

import crypto from "node:crypto";
import http from "node:http";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 0);
const secret = Buffer.from(process.env.BENCH_NODE_SECRET ?? "", "hex");
if (secret.length < 16) {
  console.error("BENCH_NODE_SECRET must be at least 16 bytes of hex");
  process.exit(2);
}
const MAX_BODY_BYTES = 16384;

/** The claims of a valid token, or null. */
function verify(token) {
  if (typeof token !== "string") return null;
  const dot = token.indexOf(".");
  if (dot < 0) return null;
  const claims = token.slice(0, dot);
  const mac = Buffer.from(token.slice(dot + 1), "base64url");
  const expected = crypto.createHmac("sha256", secret).update(claims).digest();
  if (mac.length !== expected.length || !crypto.timingSafeEqual(mac, expected)) return null;
  try {
    const parsed = JSON.parse(Buffer.from(claims, "base64url").toString("utf8"));
    if (typeof parsed.u !== "string" || !Array.isArray(parsed.c)) return null;
    return parsed;
  } catch {
    return null;
  }
}

/** Per conversation: the last seq and the messages by `sender\nclient_msg_id`. */
const conversations = new Map();

function conversation(id) {
  let c = conversations.get(id);
  if (!c) {
    c = { seq: 0, byClientId: new Map() };
    conversations.set(id, c);
  }
  return c;
}

const refusal = (code, message) => ({ ok: false, error: { code, message } });

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
  } else {
    res.writeHead(404).end();
  }
});

const io = new Server(httpServer, {
  serveClient: false,
  connectTimeout: Number(process.env.BENCH_CONNECT_TIMEOUT_MS ?? 45_000),
  maxHttpBufferSize: 1_048_576,
});

io.use((socket, next) => {
  const claims = verify(socket.handshake.auth?.token);
  if (!claims) return next(new Error("unauthorized"));
  socket.data.user = claims.u;
  socket.data.conversations = new Set(claims.c);
  next();
});

io.on("connection", (socket) => {
  socket.join([`user:${socket.data.user}`, ...[...socket.data.conversations].map((c) => `conversation:${c}`)]);

  socket.on("message:send", (data, ack) => {
    if (typeof ack !== "function") return;
    const { conversation_id: conversationId, client_msg_id: clientMsgId, body } = data ?? {};
    if (typeof conversationId !== "string" || typeof clientMsgId !== "string" || typeof body !== "string") {
      return ack(refusal("invalid_payload", "expected {conversation_id, client_msg_id, body}"));
    }
    if (Buffer.byteLength(body) > MAX_BODY_BYTES) return ack(refusal("invalid", "body is too long"));
    if (!socket.data.conversations.has(conversationId)) {
      return ack(refusal("forbidden", "only members of the conversation may do this"));
    }
    const c = conversation(conversationId);
    const key = `${socket.data.user}\n${clientMsgId}`;
    const earlier = c.byClientId.get(key);
    if (earlier) return ack({ ok: true, message: earlier, duplicate: true });
    c.seq += 1;
    const message = {
      id: crypto.randomUUID(),
      conversation_id: conversationId,
      seq: c.seq,
      sender_id: socket.data.user,
      client_msg_id: clientMsgId,
      body,
      created_at: new Date().toISOString(),
    };
    c.byClientId.set(key, message);
    ack({ ok: true, message, duplicate: false });
    io.to(`conversation:${conversationId}`).emit("message:new", { message });
  });

  socket.on("sync", (_data, ack) => {
    if (typeof ack === "function") ack({ ok: true, positions: {} });
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});
