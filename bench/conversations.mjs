// Conversation throughput, latency and replay against a running `atom serve` (bench/conversations.sh).
//
// 1. 100 two-member conversations: in each, one user sends MESSAGES messages over Socket.io
//    (a window of WINDOW unacknowledged sends per sender), the other receives them. Reported:
//    messages per second sent (acknowledged, so stored) and delivered, and p50/p99 from the
//    emit of `message:send` to the receiver's `message:new`.
// 2. Replay: REPLAY messages are stored in one conversation while its second member is away;
//    then a client connects and sends `sync {positions: {}}`: the time until the last
//    `message:new` and the sync's ack.
//
// Usage: node bench/conversations.mjs http://127.0.0.1:PORT  (needs tests/peers' node_modules)

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/peers/package.json"));
const { io } = require("socket.io-client");

const base = process.argv[2];
const CONVERSATIONS = Number(process.env.BENCH_CONVERSATIONS ?? 100);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 100);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 8);
const REPLAY = Number(process.env.BENCH_REPLAY ?? 10_000);
const PASSWORD = "correct horse battery staple";

async function json(method, url, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + url, { method, headers, body: body && JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function account() {
  const email = `${crypto.randomUUID()}@example.com`;
  await json("POST", "/v1/auth/register", { email, password: PASSWORD });
  const { access_token: token } = await json("POST", "/v1/auth/login", { email, password: PASSWORD });
  const me = await json("GET", "/v1/me", undefined, token);
  return { id: me.id, token };
}

function connect(token) {
  return new Promise((resolve, reject) => {
    const socket = io(base, { auth: { token }, transports: ["websocket"], forceNew: true, reconnection: false });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

const call = (socket, event, data) =>
  new Promise((resolve, reject) =>
    socket.timeout(120_000).emit(event, data, (err, ack) => (err ? reject(err) : ack.ok ? resolve(ack) : reject(new Error(JSON.stringify(ack))))),
  );

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function chat() {
  const pairs = [];
  for (let i = 0; i < CONVERSATIONS; i++) {
    const [a, b] = [await account(), await account()];
    const { id } = await json("POST", "/v1/conversations", { member_ids: [b.id] }, a.token);
    pairs.push({ a, b, conversation: id });
  }
  for (const pair of pairs) {
    pair.sender = await connect(pair.a.token);
    pair.receiver = await connect(pair.b.token);
    await call(pair.sender, "sync", { positions: {} });
    await call(pair.receiver, "sync", { positions: {} });
  }
  const latencies = [];
  let delivered = 0;
  let lastDelivery = 0;
  const allDelivered = new Promise((resolve) => {
    for (const pair of pairs) {
      pair.receiver.on("message:new", ({ message }) => {
        const now = performance.now();
        latencies.push(now - Number(message.body));
        delivered += 1;
        lastDelivery = now;
        if (delivered === CONVERSATIONS * MESSAGES) resolve();
      });
    }
  });
  const started = performance.now();
  let lastAck = 0;
  await Promise.all(
    pairs.map(async (pair) => {
      let next = 0;
      const lane = async () => {
        while (next < MESSAGES) {
          const n = next++;
          await call(pair.sender, "message:send", {
            conversation_id: pair.conversation,
            client_msg_id: String(n),
            body: String(performance.now()),
          });
          lastAck = performance.now();
        }
      };
      await Promise.all(Array.from({ length: WINDOW }, lane));
    }),
  );
  await allDelivered;
  const total = CONVERSATIONS * MESSAGES;
  latencies.sort((x, y) => x - y);
  for (const pair of pairs) {
    pair.sender.disconnect();
    pair.receiver.disconnect();
  }
  return {
    messages: total,
    sent_per_second: Math.round(total / ((lastAck - started) / 1000)),
    delivered_per_second: Math.round(total / ((lastDelivery - started) / 1000)),
    p50_ms: Number(percentile(latencies, 50).toFixed(2)),
    p99_ms: Number(percentile(latencies, 99).toFixed(2)),
  };
}

async function replay() {
  const [a, b] = [await account(), await account()];
  const { id } = await json("POST", "/v1/conversations", { member_ids: [b.id] }, a.token);
  const sender = await connect(a.token);
  let next = 0;
  const lane = async () => {
    while (next < REPLAY) {
      const n = next++;
      await call(sender, "message:send", { conversation_id: id, client_msg_id: String(n), body: `missed ${n}` });
    }
  };
  await Promise.all(Array.from({ length: 16 }, lane));
  sender.disconnect();
  const receiver = await connect(b.token);
  let received = 0;
  let lastSeq = 0;
  let ordered = true;
  const started = performance.now();
  const all = new Promise((resolve) => {
    receiver.on("message:new", ({ message }) => {
      received += 1;
      ordered &&= message.seq === lastSeq + 1;
      lastSeq = message.seq;
      if (received === REPLAY) resolve(performance.now());
    });
  });
  const ack = await call(receiver, "sync", { positions: {} });
  const ackAt = performance.now();
  const lastAt = await all;
  receiver.disconnect();
  if (!ordered || ack.positions[id] !== REPLAY) throw new Error("the replay was not complete and in order");
  return {
    messages: REPLAY,
    seconds_to_last_message: Number(((lastAt - started) / 1000).toFixed(2)),
    seconds_to_sync_ack: Number(((ackAt - started) / 1000).toFixed(2)),
    messages_per_second: Math.round(REPLAY / ((lastAt - started) / 1000)),
  };
}

const results = { chat: await chat(), replay: await replay() };
process.stdout.write(`${JSON.stringify(results)}\n`);
process.exit(0);
