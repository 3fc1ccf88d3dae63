// The scenarios of bench/socketio.sh against one running server (atom or the Node
// reference), driven from client processes (clients.mjs) forked here. Prints one JSON object.
//
//   node run.mjs --target atom|node --url http://127.0.0.1:PORT --pid SERVER_PID \
//       [--scenarios idle,pending,broadcast,storm,chat]
//
// Set-up: BENCH_USERS users (atom: registered and logged in through the API; node: tokens
// signed with BENCH_NODE_SECRET), one sender more, one conversation of the sender and all
// BENCH_USERS, and BENCH_CHAT_PAIRS two-member conversations among the first users.
// Scenarios, in this order (each closes its connections and waits for the server to let go
// of them before the next):
//
// - idle: BENCH_IDLE connections (authenticated, websocket) opened BENCH_CONCURRENCY at a
//   time per client process and held; the server's resident memory (VmRSS) before and after,
//   per connection; how fast they were accepted.
// - pending: BENCH_PENDING Engine.IO sessions that never send the Socket.IO CONNECT: memory
//   per session while held, then how long until the server closes them.
// - broadcast: BENCH_BROADCAST connections (BENCH_BROADCAST / BENCH_USERS per user) synced
//   in the big conversation; the sender sends BENCH_BROADCAST_MESSAGES bodies of
//   BENCH_BODY_BYTES at BENCH_BROADCAST_RATE per second: p50/p99 from send to each delivery,
//   and the server's CPU time (utime + stime) per delivery over the phase.
// - storm: BENCH_STORM connections attempted within BENCH_STORM_SPREAD_MS: time until all are
//   connected, refusals, p50/p99 connect time.
// - chat: bench/conversations.mjs's load, BENCH_CHAT_PAIRS conversations of two, each sender
//   BENCH_CHAT_MESSAGES messages with BENCH_CHAT_WINDOW unacknowledged.

import { fork } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const env = (name, fallback) => Number(process.env[name] ?? fallback);

const target = arg("target");
const base = arg("url");
const serverPid = Number(arg("pid"));
const scenarios = arg("scenarios", "idle,pending,broadcast,storm,chat").split(",");
const USERS = env("BENCH_USERS", 500);
const PROCESSES = env("BENCH_CLIENT_PROCESSES", 4);
const CONCURRENCY = env("BENCH_CONCURRENCY", 64);
const IDLE = env("BENCH_IDLE", 19_900);
const PENDING = env("BENCH_PENDING", 10_000);
const PENDING_WAIT_MS = env("BENCH_PENDING_WAIT_MS", 120_000);
const BROADCAST = env("BENCH_BROADCAST", 5_000);
const BROADCAST_MESSAGES = env("BENCH_BROADCAST_MESSAGES", 40);
const BROADCAST_RATE = env("BENCH_BROADCAST_RATE", 2);
const BODY_BYTES = env("BENCH_BODY_BYTES", 1024);
const STORM = env("BENCH_STORM", 5_000);
const STORM_SPREAD_MS = env("BENCH_STORM_SPREAD_MS", 1_000);
const CHAT_PAIRS = env("BENCH_CHAT_PAIRS", 100);
const CHAT_MESSAGES = env("BENCH_CHAT_MESSAGES", 100);
const CHAT_WINDOW = env("BENCH_CHAT_WINDOW", 8);
const SETTLE_MS = env("BENCH_SETTLE_MS", 5_000);
const WARMUP = env("BENCH_WARMUP", 200);
const ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 2}`);
const PASSWORD = "correct horse battery staple";

const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[${target}] ${a.join(" ")}\n`);

// --- the server process, from /proc --------------------------------------------------------

function rssKb() {
  const status = fs.readFileSync(`/proc/${serverPid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]);
}

/** utime + stime of a process (the server by default), in seconds. */
function cpuSeconds(pid = serverPid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds of the server and of all client processes together. */
const cpuBoth = () => ({ server: cpuSeconds(), clients: workers.reduce((s, w) => s + cpuSeconds(w.pid), 0) });
function cpuSince(start) {
  const end = cpuBoth();
  return { server_cpu_seconds: Number((end.server - start.server).toFixed(2)), client_cpu_seconds: Number((end.clients - start.clients).toFixed(2)) };
}

/**
 * The server's resident memory once it has stopped moving (four samples 0.5 s apart within
 * 0.5 %, or 30 s): freed memory (the set-up's password hashes, closed connections) goes back
 * to the system a little later, not at once.
 */
async function settledRssKb() {
  const samples = [rssKb()];
  for (let i = 0; i < 60; i++) {
    await sleep(500);
    samples.push(rssKb());
    const last = samples.slice(-4);
    if (last.length === 4 && Math.max(...last) - Math.min(...last) <= 0.005 * Math.max(...last)) break;
  }
  return samples[samples.length - 1];
}

const openFiles = () => fs.readdirSync(`/proc/${serverPid}/fd`).length;
const loadavg = () => os.loadavg().map((x) => Number(x.toFixed(2)));

/** Waits until the server holds at most `files` open files (its connections went). */
async function drained(files, withinMs = 60_000) {
  const until = now() + withinMs;
  while (openFiles() > files && now() < until) await sleep(200);
  return openFiles();
}

// --- statistics ----------------------------------------------------------------------------

function summary(values) {
  if (values.length === 0) return { n: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  const round = (x) => Number(x.toFixed(2));
  return { n: sorted.length, p50: round(at(50)), p99: round(at(99)), max: round(sorted[sorted.length - 1]) };
}

// --- client processes ----------------------------------------------------------------------

const workers = Array.from({ length: PROCESSES }, () =>
  fork(path.join(here, "clients.mjs"), [], { execArgv: ["--max-old-space-size=4096"] }),
);
let nextId = 0;
const waiting = new Map();
for (const w of workers) {
  w.on("message", (m) => {
    const { resolve, reject } = waiting.get(m.id);
    waiting.delete(m.id);
    m.ok ? resolve(m.result) : reject(new Error(m.error));
  });
}
function ask(worker, command) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.send({ ...command, id });
  });
}
const all = (command) => Promise.all(workers.map((w) => ask(w, command)));
/** Splits `count` over the processes: {count, offset} each. */
const shares = (count) =>
  workers.map((_, i) => {
    const per = Math.floor(count / PROCESSES) + (i < count % PROCESSES ? 1 : 0);
    const offset = i * Math.floor(count / PROCESSES) + Math.min(i, count % PROCESSES);
    return { count: per, offset };
  });
/** Runs `command` on every process with its share of `count` connections and `tokens`. */
function spread(count, tokens, command) {
  return Promise.all(
    shares(count).map(({ count: n, offset }, i) => {
      // The i-th connection overall uses tokens[i % tokens.length].
      const mine = Array.from({ length: Math.min(n, tokens.length) }, (_, j) => tokens[(offset + j) % tokens.length]);
      return ask(workers[i], { ...command, url: base, tokens: mine, count: n, offset, addresses: ADDRESSES });
    }),
  );
}
function merge(results) {
  const refused = {};
  for (const r of results) for (const [k, v] of Object.entries(r.refused)) refused[k] = (refused[k] ?? 0) + v;
  return {
    connected: results.reduce((s, r) => s + r.connected, 0),
    refused,
    connect_ms: results.flatMap((r) => r.connect_ms),
    first_attempt: Math.min(...results.map((r) => r.first_attempt)),
    last_connected: Math.max(...results.map((r) => r.last_connected)),
  };
}

// --- set-up --------------------------------------------------------------------------------

async function json(method, url, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + url, { method, headers, body: body && JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
  return response.status === 204 ? null : response.json();
}

async function atomAccount() {
  const email = `${crypto.randomUUID()}@example.com`;
  await json("POST", "/v1/auth/register", { email, password: PASSWORD });
  const { access_token: token } = await json("POST", "/v1/auth/login", { email, password: PASSWORD });
  const me = await json("GET", "/v1/me", undefined, token);
  return { id: me.id, token };
}

/** Users and conversations; returns tokens by role. */
async function setUp(users, withBig) {
  const pairs = Math.min(CHAT_PAIRS, Math.floor(users / 2));
  if (target === "atom") {
    const sender = await atomAccount();
    const members = [];
    for (let i = 0; i < users; i += 8) {
      members.push(...(await Promise.all(Array.from({ length: Math.min(8, users - i) }, atomAccount))));
    }
    const big = withBig
      ? (await json("POST", "/v1/conversations", { member_ids: members.map((m) => m.id) }, sender.token)).id
      : null;
    const chat = [];
    for (let i = 0; i < pairs; i++) {
      const [a, b] = [members[2 * i], members[2 * i + 1]];
      const { id } = await json("POST", "/v1/conversations", { member_ids: [b.id] }, a.token);
      chat.push({ sender: a.token, receiver: b.token, conversation: id });
    }
    return { sender: sender.token, members: members.map((m) => m.token), big, chat };
  }
  const secret = Buffer.from(process.env.BENCH_NODE_SECRET, "hex");
  const sign = (user, conversations) => {
    const claims = Buffer.from(JSON.stringify({ u: user, c: conversations })).toString("base64url");
    return `${claims}.${crypto.createHmac("sha256", secret).update(claims).digest("base64url")}`;
  };
  const big = withBig ? crypto.randomUUID() : null;
  const pairIds = Array.from({ length: pairs }, () => crypto.randomUUID());
  const memberTokens = Array.from({ length: users }, (_, j) =>
    sign(`u${j}`, [...(big ? [big] : []), ...(j < 2 * pairs ? [pairIds[Math.floor(j / 2)]] : [])]),
  );
  const chat = pairIds.map((conversation, i) => ({
    sender: memberTokens[2 * i],
    receiver: memberTokens[2 * i + 1],
    conversation,
  }));
  return { sender: sign("sender", big ? [big] : []), members: memberTokens, big, chat };
}

// --- scenarios -----------------------------------------------------------------------------

async function idle(tokens) {
  const filesBefore = openFiles();
  // A first round of connections, closed again, so that what the server allocates once (its
  // pools, the first sockets' structures) is in the baseline rather than in the figure.
  await spread(WARMUP, tokens, { op: "connect", concurrency: CONCURRENCY, sync: false });
  await all({ op: "close" });
  await drained(filesBefore);
  const rssBefore = await settledRssKb();
  const cpu = cpuBoth();
  const t0 = now();
  const outcome = merge(await spread(IDLE, tokens, { op: "connect", concurrency: CONCURRENCY, sync: false }));
  const seconds = (outcome.last_connected - t0) / 1000;
  const cpuConnect = cpuSince(cpu);
  const rssConnected = rssKb();
  await sleep(SETTLE_MS);
  const rssSettled = await settledRssKb();
  const load = loadavg();
  await all({ op: "close" });
  await drained(filesBefore);
  const rssAfterClose = await settledRssKb();
  return {
    attempted: IDLE,
    connected: outcome.connected,
    refused: outcome.refused,
    seconds_to_connect_all: Number(seconds.toFixed(2)),
    accepted_per_second: Math.round(outcome.connected / seconds),
    connect_ms: summary(outcome.connect_ms),
    ...cpuConnect,
    server_cpu_ms_per_connection: Number(((cpuConnect.server_cpu_seconds * 1000) / Math.max(1, outcome.connected)).toFixed(3)),
    rss_before_kb: rssBefore,
    rss_connected_kb: rssConnected,
    rss_settled_kb: rssSettled,
    rss_after_close_kb: rssAfterClose,
    kb_per_connection: Number(((rssSettled - rssBefore) / outcome.connected).toFixed(2)),
    loadavg: load,
  };
}

async function pendingHandshakes() {
  const filesBefore = openFiles();
  const rssBefore = await settledRssKb();
  const cpu = cpuBoth();
  const t0 = now();
  const opened = await Promise.all(
    shares(PENDING).map(({ count, offset }, i) =>
      ask(workers[i], { op: "pending", url: base, count, offset, addresses: ADDRESSES, concurrency: CONCURRENCY }),
    ),
  );
  const openSeconds = (now() - t0) / 1000;
  const cpuOpen = cpuSince(cpu);
  const count = opened.reduce((s, o) => s + o.opened, 0);
  const rssHeld = rssKb();
  const load = loadavg();
  const closed = await all({ op: "pending_closed", within_ms: PENDING_WAIT_MS });
  await drained(filesBefore);
  const failed = {};
  for (const o of opened) for (const [k, v] of Object.entries(o.failed)) failed[k] = (failed[k] ?? 0) + v;
  return {
    attempted: PENDING,
    opened: count,
    failed,
    seconds_to_open_all: Number(openSeconds.toFixed(2)),
    ...cpuOpen,
    server_cpu_ms_per_handshake: Number(((cpuOpen.server_cpu_seconds * 1000) / Math.max(1, count)).toFixed(3)),
    rss_before_kb: rssBefore,
    rss_held_kb: rssHeld,
    kb_per_handshake: Number(((rssHeld - rssBefore) / count).toFixed(2)),
    closed_by_server: closed.reduce((s, c) => s + c.closed, 0),
    still_open_after_wait: closed.reduce((s, c) => s + c.still_open, 0),
    closed_after_ms: summary(closed.flatMap((c) => c.closed_after_ms)),
    rss_after_close_kb: await settledRssKb(),
    loadavg: load,
  };
}

function senderSocket(token) {
  return new Promise((resolve, reject) => {
    const socket = io(base, { auth: { token }, transports: ["websocket"], forceNew: true, reconnection: false });
    socket.once("connect", () =>
      socket.timeout(60_000).emit("sync", { positions: {} }, (err) => (err ? reject(err) : resolve(socket))),
    );
    socket.once("connect_error", reject);
  });
}

async function broadcast(setup) {
  const filesBefore = openFiles();
  const outcome = merge(await spread(BROADCAST, setup.members, { op: "connect", concurrency: CONCURRENCY, sync: true }));
  if (outcome.connected !== BROADCAST) log("broadcast: only", outcome.connected, "of", BROADCAST, "connected", JSON.stringify(outcome.refused));
  const sender = await senderSocket(setup.sender);
  await all({ op: "record", conversation: setup.big });
  const send = (n) =>
    new Promise((resolve) => {
      const stamp = now().toFixed(4);
      const body = `${stamp} `.padEnd(BODY_BYTES, "x");
      sender
        .timeout(60_000)
        .emit("message:send", { conversation_id: setup.big, client_msg_id: `b${n}`, body }, (err, ack) =>
          resolve(err ? "timeout" : ack.ok ? "ok" : ack.error.code),
        );
    });
  const cpu0 = cpuBoth();
  const t0 = now();
  const acks = [];
  for (let n = 0; n < BROADCAST_MESSAGES; n++) {
    const due = t0 + (n * 1000) / BROADCAST_RATE;
    if (due > now()) await sleep(due - now());
    acks.push(send(n));
  }
  const outcomes = await Promise.all(acks);
  // Deliveries of the last message: until they stop arriving.
  const expected = outcome.connected * BROADCAST_MESSAGES;
  let received = 0;
  let latencies = [];
  for (let waited = 0; waited < 30_000; waited += 1_000) {
    await sleep(1_000);
    const counts = await all({ op: "recorded" });
    latencies = latencies.concat(counts.flatMap((c) => c.latencies_ms));
    received = latencies.length;
    if (received >= expected) break;
    await all({ op: "record", conversation: setup.big });
  }
  const cpuUsed = cpuSince(cpu0);
  const cpu = cpuUsed.server_cpu_seconds;
  const load = loadavg();
  sender.disconnect();
  await all({ op: "close" });
  await drained(filesBefore);
  return {
    members_connected: outcome.connected,
    refused: outcome.refused,
    messages: BROADCAST_MESSAGES,
    send_outcomes: outcomes.reduce((m, o) => ({ ...m, [o]: (m[o] ?? 0) + 1 }), {}),
    deliveries_expected: expected,
    deliveries: received,
    latency_ms: summary(latencies),
    ...cpuUsed,
    server_cpu_us_per_delivery: Number(((cpu * 1e6) / Math.max(1, received)).toFixed(2)),
    loadavg: load,
  };
}

async function storm(tokens) {
  const filesBefore = openFiles();
  const cpu = cpuBoth();
  const startAt = now() + 500;
  const outcome = merge(await spread(STORM, tokens, { op: "connect", start_at: startAt, spread_ms: STORM_SPREAD_MS, sync: false }));
  const cpuStorm = cpuSince(cpu);
  const load = loadavg();
  await all({ op: "close" });
  await drained(filesBefore);
  return {
    attempted: STORM,
    spread_ms: STORM_SPREAD_MS,
    connected: outcome.connected,
    refused: outcome.refused,
    seconds_until_all_connected: Number(((outcome.last_connected - startAt) / 1000).toFixed(2)),
    connect_ms: summary(outcome.connect_ms),
    ...cpuStorm,
    loadavg: load,
  };
}

async function chat(setup) {
  const cpu = cpuBoth();
  const r = await ask(workers[0], {
    op: "chat",
    url: base,
    pairs: setup.chat,
    messages: CHAT_MESSAGES,
    window: CHAT_WINDOW,
    addresses: ADDRESSES,
  });
  return {
    conversations: setup.chat.length,
    messages: r.messages,
    delivered: r.delivered,
    sent_per_second: Math.round(r.messages / r.sent_seconds),
    delivered_per_second: Math.round(r.delivered / r.delivered_seconds),
    latency_ms: summary(r.latencies_ms),
    ...cpuSince(cpu),
    loadavg: loadavg(),
  };
}

// --- main ----------------------------------------------------------------------------------

const results = { target, scenarios: {}, loadavg_start: loadavg() };
try {
  const needBig = scenarios.some((s) => ["idle", "broadcast", "storm"].includes(s));
  const users = needBig ? USERS : scenarios.includes("chat") ? Math.min(USERS, 2 * CHAT_PAIRS) : 0;
  const t = now();
  const setup = users > 0 ? await setUp(users, needBig) : null;
  log(`set-up: ${users} users in ${((now() - t) / 1000).toFixed(1)} s`);
  results.rss_idle_server_kb = rssKb();
  for (const s of scenarios) {
    log(`${s}...`);
    const started = now();
    if (s === "idle") results.scenarios.idle = await idle(setup.members);
    else if (s === "pending") results.scenarios.pending = await pendingHandshakes();
    else if (s === "broadcast") results.scenarios.broadcast = await broadcast(setup);
    else if (s === "storm") results.scenarios.storm = await storm(setup.members);
    else if (s === "chat") results.scenarios.chat = await chat(setup);
    else throw new Error(`unknown scenario ${s}`);
    log(`${s}: ${((now() - started) / 1000).toFixed(1)} s ${JSON.stringify(results.scenarios[s]).slice(0, 400)}`);
  }
} finally {
  results.loadavg_end = loadavg();
  process.stdout.write(`${JSON.stringify(results)}\n`);
  for (const w of workers) w.kill();
}
process.exit(0);
