// Resident memory per idle Socket.io connection of a running `atom serve` (bench/siomem.sh).
//
// Opens COUNT websocket connections with the official socket.io-client, spread over the
// loopback addresses 127.0.0.2..9 (`localAddress`), and reads the server's VmRSS and RssAnon
// from /proc/PID/status before and after, once the count has settled. Two modes:
//
// - `auth`: each connection sends its CONNECT with an access token (USERS accounts, made
//   through the API, share the connections) and waits for `connect`;
// - `unauth`: each opens an Engine.IO session (the handshake) and never sends CONNECT, as a
//   client that stalls before authenticating; the server holds it until the connect timeout.
//
// Prints one JSON line: counts, RSS before/after and the bytes per connection. Then closes
// everything and reads RSS once more (what the server gave back).
//
// Usage: node bench/siomem.mjs http://127.0.0.1:PORT SERVER_PID auth|unauth COUNT
//        (needs tests/peers' node_modules; USERS, default 20; BATCH concurrent opens, 200;
//        HOLD=1 keeps the connections open until the script is killed, for a heap profiler)

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/peers/package.json"));
const { io, Manager } = require("socket.io-client");

const [base, pidArg, mode, countArg] = process.argv.slice(2);
const pid = Number(pidArg);
const COUNT = Number(countArg ?? 1000);
const USERS = Number(process.env.USERS ?? 20);
const BATCH = Number(process.env.BATCH ?? 200);
const PASSWORD = "correct horse battery staple";
if (!base || !pid || !["auth", "unauth"].includes(mode)) {
  console.error("usage: node bench/siomem.mjs URL SERVER_PID auth|unauth COUNT");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The server's resident memory, in KiB, from /proc. */
function rss() {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, "m"))[1]);
  return { vm_rss_kib: field("VmRSS"), rss_anon_kib: field("RssAnon") };
}

/** RSS once it stops moving: the server has finished setting the connections up. */
async function settled() {
  let last = rss();
  for (let i = 0; i < 30; i++) {
    await sleep(1000);
    const now = rss();
    if (Math.abs(now.vm_rss_kib - last.vm_rss_kib) < 64) return now;
    last = now;
  }
  return last;
}

async function json(method, url, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + url, { method, headers, body: body && JSON.stringify(body) });
  if (!response.ok) throw new Error(`${method} ${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function token() {
  const email = `${crypto.randomUUID()}@example.com`;
  await json("POST", "/v1/auth/register", { email, password: PASSWORD });
  const { access_token } = await json("POST", "/v1/auth/login", { email, password: PASSWORD });
  return access_token;
}

const common = (i) => ({
  transports: ["websocket"],
  reconnection: false,
  forceNew: true,
  timeout: 60_000,
  localAddress: `127.0.0.${2 + (i % 8)}`,
});

/** An authenticated connection: resolves once the server said `connect`. */
function connect(i, tokens) {
  return new Promise((resolve, reject) => {
    const socket = io(base, { ...common(i), auth: { token: tokens[i % tokens.length] } });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (e) => reject(new Error(`connection ${i}: ${e.message}`)));
  });
}

/** An Engine.IO session without a CONNECT: resolves once the server sent its open packet. */
function handshake(i) {
  return new Promise((resolve, reject) => {
    const manager = new Manager(base, { ...common(i), autoConnect: false });
    manager.open((e) => (e ? reject(new Error(`handshake ${i}: ${e.message}`)) : resolve(manager)));
  });
}

async function main() {
  const tokens = [];
  if (mode === "auth") for (let u = 0; u < USERS; u++) tokens.push(await token());
  // One connection opened and closed first, so that lazily built server state is not counted.
  const warm = mode === "auth" ? await connect(0, tokens) : await handshake(0);
  warm.disconnect();
  await sleep(500);
  const before = await settled();
  const open = [];
  const started = performance.now();
  for (let i = 0; i < COUNT; i += BATCH) {
    const batch = [];
    for (let j = i; j < Math.min(COUNT, i + BATCH); j++) batch.push(mode === "auth" ? connect(j, tokens) : handshake(j));
    open.push(...(await Promise.all(batch)));
  }
  const openSecs = (performance.now() - started) / 1000;
  const after = await settled();
  const perConnection = ((after.vm_rss_kib - before.vm_rss_kib) * 1024) / COUNT;
  const perConnectionAnon = ((after.rss_anon_kib - before.rss_anon_kib) * 1024) / COUNT;
  if (process.env.HOLD === "1") {
    // For a heap profiler attached to the server: the connections stay open until killed.
    console.log(JSON.stringify({ mode, connections: COUNT, before, after, holding: true }));
    await new Promise(() => {});
  }
  for (const c of open) c.disconnect();
  await sleep(3000);
  const closed = await settled();
  console.log(
    JSON.stringify({
      mode,
      connections: COUNT,
      users: mode === "auth" ? USERS : 0,
      open_per_sec: Math.round(COUNT / openSecs),
      before,
      after,
      after_close: closed,
      bytes_per_connection: Math.round(perConnection),
      anon_bytes_per_connection: Math.round(perConnectionAnon),
    }),
  );
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
