// One client process of bench/socketio.sh, forked by run.mjs: it holds a share of the
// connections (each process stays under the machine's 20,000 open files) with the official
// socket.io-client over websocket, and answers run.mjs's commands over the IPC channel:
//
//   {op: "connect", url, tokens, count, offset, addresses, concurrency | start_at + spread_ms,
//    sync, conversation}
//       opens `count` connections, the i-th with tokens[i % tokens.length] from
//       addresses[(offset + i) % addresses.length]: at most `concurrency` attempts at a time,
//       or (a storm) the i-th attempt at start_at + i * spread_ms / count; with `sync`, each
//       sends `sync {positions: {}}` once connected and counts as connected on its ack.
//       -> {connected, refused: {reason: n}, connect_ms: [...], first_attempt, last_connected}
//   {op: "record", conversation}  starts timing every `message:new` of that conversation
//   {op: "recorded"}  -> {latencies_ms: [...]}, and stops recording
//   {op: "close"}     disconnects every connection of this process -> {closed}
//   {op: "pending", url, count, offset, addresses, concurrency}
//       opens `count` Engine.IO websocket sessions that answer pings but never send the
//       Socket.IO CONNECT -> {opened, failed: {reason: n}}
//   {op: "pending_closed", within_ms}  waits until the server has closed them all, or
//       within_ms -> {closed, still_open, closed_after_ms: [...] (from each one's open)}
//   {op: "chat", url, pairs, messages, window}  the two-member conversations scenario of
//       bench/conversations.mjs on this process's own connections
//
// Times are CLOCK_MONOTONIC (process.hrtime), which every process on the machine shares, so
// a message's send instant (written in its body by run.mjs) and its delivery instant here
// are on one clock.

import { io } from "socket.io-client";
import WebSocket from "ws";

const now = () => Number(process.hrtime.bigint()) / 1e6;

/** Held socket.io connections, and raw Engine.IO sessions. */
let sockets = [];
let pending = [];
let recording = null;

function open(url, token, localAddress, sync) {
  return new Promise((resolve) => {
    const started = now();
    const socket = io(url, {
      auth: { token },
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: 120_000,
      localAddress,
    });
    socket.on("message:new", (payload) => {
      const message = payload?.message;
      if (!recording || message?.conversation_id !== recording.conversation) return;
      recording.latencies.push(now() - Number.parseFloat(message.body));
    });
    socket.once("connect_error", (e) => {
      socket.close();
      resolve({ error: e.message || "connect_error", started });
    });
    socket.once("connect", () => {
      if (!sync) return resolve({ socket, ms: now() - started, started });
      socket.timeout(120_000).emit("sync", { positions: {} }, (err, ack) => {
        if (err || !ack?.ok) {
          socket.close();
          return resolve({ error: err ? "sync_timeout" : `sync_${ack?.error?.code}`, started });
        }
        resolve({ socket, ms: now() - started, started });
      });
    });
  });
}

function tally(outcomes) {
  const refused = {};
  const connectMs = [];
  let lastConnected = 0;
  let firstAttempt = Infinity;
  for (const o of outcomes) {
    firstAttempt = Math.min(firstAttempt, o.started);
    if (o.error) {
      refused[o.error] = (refused[o.error] ?? 0) + 1;
    } else {
      sockets.push(o.socket);
      connectMs.push(o.ms);
      lastConnected = Math.max(lastConnected, o.started + o.ms);
    }
  }
  return { connected: connectMs.length, refused, connect_ms: connectMs, first_attempt: firstAttempt, last_connected: lastConnected };
}

/** Runs `attempt(i)` for i < count, at most `concurrency` at a time. */
async function bounded(count, concurrency, attempt) {
  const outcomes = new Array(count);
  let next = 0;
  const lane = async () => {
    while (next < count) {
      const i = next++;
      outcomes[i] = await attempt(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return outcomes;
}

/** Starts attempt i at start_at + i * spread_ms / count (a storm), whatever the others do. */
async function paced(count, startAt, spreadMs, attempt) {
  const outcomes = [];
  for (let i = 0; i < count; i++) {
    const due = startAt + (i * spreadMs) / count;
    const wait = due - now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    outcomes.push(attempt(i));
  }
  return Promise.all(outcomes);
}

const ops = {
  async connect(c) {
    const attempt = (i) =>
      open(c.url, c.tokens[i % c.tokens.length], c.addresses[(c.offset + i) % c.addresses.length], c.sync);
    const outcomes =
      c.start_at !== undefined ? await paced(c.count, c.start_at, c.spread_ms, attempt) : await bounded(c.count, c.concurrency, attempt);
    return tally(outcomes);
  },

  record(c) {
    recording = { conversation: c.conversation, latencies: [] };
    return {};
  },

  recorded() {
    const latencies = recording?.latencies ?? [];
    recording = null;
    return { latencies_ms: latencies };
  },

  async close() {
    const closed = sockets.length;
    for (const s of sockets) s.disconnect();
    sockets = [];
    return { closed };
  },

  async pending(c) {
    const wsUrl = `${c.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
    const failed = {};
    const attempt = (i) =>
      new Promise((resolve) => {
        const started = now();
        const ws = new WebSocket(wsUrl, { localAddress: c.addresses[(c.offset + i) % c.addresses.length] });
        const entry = { ws, started, closedAt: null };
        let opened = false;
        ws.on("message", (data) => {
          const packet = data.toString();
          // Pings are answered, so that the session lives until the connect timeout ends it.
          if (packet === "2") return ws.send("3");
          // Engine.IO's open packet: "0{sid, pingInterval, …}"; the CONNECT never follows.
          if (!opened && packet.startsWith("0")) {
            opened = true;
            pending.push(entry);
            resolve(true);
          }
        });
        ws.on("unexpected-response", (_req, res) => {
          failed[`http_${res.statusCode}`] = (failed[`http_${res.statusCode}`] ?? 0) + 1;
          ws.terminate();
          resolve(false);
        });
        ws.on("error", (e) => {
          if (!opened) {
            failed[e.code ?? "error"] = (failed[e.code ?? "error"] ?? 0) + 1;
            resolve(false);
          }
        });
        ws.on("close", () => {
          entry.closedAt = now();
          if (!opened) resolve(false);
        });
      });
    const outcomes = await bounded(c.count, c.concurrency, attempt);
    return { opened: outcomes.filter(Boolean).length, failed };
  },

  async pending_closed(c) {
    const until = now() + c.within_ms;
    while (pending.some((e) => e.closedAt === null) && now() < until) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const closed = pending.filter((e) => e.closedAt !== null);
    const result = {
      closed: closed.length,
      still_open: pending.length - closed.length,
      closed_after_ms: closed.map((e) => e.closedAt - e.started),
    };
    for (const e of pending) e.ws.terminate();
    pending = [];
    return result;
  },

  async chat(c) {
    const pairs = [];
    for (const p of c.pairs) {
      const sender = await open(c.url, p.sender, c.addresses[0], true);
      const receiver = await open(c.url, p.receiver, c.addresses[1 % c.addresses.length], true);
      if (sender.error || receiver.error) throw new Error(`chat connect: ${sender.error ?? receiver.error}`);
      pairs.push({ sender: sender.socket, receiver: receiver.socket, conversation: p.conversation });
    }
    const latencies = [];
    let delivered = 0;
    let lastDelivery = 0;
    const total = pairs.length * c.messages;
    const allDelivered = new Promise((resolve) => {
      for (const pair of pairs) {
        pair.receiver.on("message:new", ({ message }) => {
          if (message.conversation_id !== pair.conversation) return;
          const t = now();
          latencies.push(t - Number.parseFloat(message.body));
          delivered += 1;
          lastDelivery = t;
          if (delivered === total) resolve();
        });
      }
    });
    const call = (socket, data) =>
      new Promise((resolve, reject) =>
        socket.timeout(120_000).emit("message:send", data, (err, ack) =>
          err ? reject(err) : ack.ok ? resolve(ack) : reject(new Error(JSON.stringify(ack))),
        ),
      );
    const started = now();
    let lastAck = 0;
    await Promise.all(
      pairs.map(async (pair) => {
        let next = 0;
        const lane = async () => {
          while (next < c.messages) {
            const n = next++;
            await call(pair.sender, { conversation_id: pair.conversation, client_msg_id: String(n), body: String(now()) });
            lastAck = now();
          }
        };
        await Promise.all(Array.from({ length: c.window }, lane));
      }),
    );
    const timeout = new Promise((resolve) => setTimeout(resolve, 60_000));
    await Promise.race([allDelivered, timeout]);
    for (const pair of pairs) {
      pair.sender.disconnect();
      pair.receiver.disconnect();
    }
    return {
      messages: total,
      delivered,
      sent_seconds: (lastAck - started) / 1000,
      delivered_seconds: (lastDelivery - started) / 1000,
      latencies_ms: latencies,
    };
  },
};

process.on("message", async (command) => {
  try {
    const result = await ops[command.op](command);
    process.send({ id: command.id, ok: true, result });
  } catch (e) {
    process.send({ id: command.id, ok: false, error: String(e?.stack ?? e) });
  }
});
