// A real socket.io-client that Atom's integration tests drive (crates/atom/tests/it/realtime.rs
// and the conversation tests).
//
// Commands arrive on stdin, one JSON object a line; outcomes leave on stdout, one JSON object
// a line, each naming the connection (`id`) it concerns:
//
//   {"op":"connect","id":"a","url":"http://127.0.0.1:8000","transport":"websocket"|"polling",
//    "auth":{"token":"…"},"local_address":"127.0.0.2",
//    "reconnection":true,"reconnection_delay":100,"reconnection_delay_max":1000,
//    "reconnection_attempts":50}
//       -> {"id":"a","event":"connected","sid":"…","transport":"websocket","recovered":false}
//        | {"id":"a","event":"connect_error","message":"unauthorized","data":null}
//   {"op":"whoami","id":"a"}  -> {"id":"a","event":"whoami","ack":{"user_id":"…","role":"user"}}
//   {"op":"close","id":"a"}   -> {"id":"a","event":"disconnect","reason":"io client disconnect"}
//   {"op":"emit","id":"a","event":"message:send","data":{…},"ack":true,"timeout_ms":5000,
//    "tag":"t1","volatile":false}
//       -> {"id":"a","event":"ack","name":"message:send","tag":"t1","ack":{…},"args":[{…}]}
//        | {"id":"a","event":"ack_timeout","name":"message:send","tag":"t1"}
//       (with "ack":false, or absent: {"id":"a","event":"emitted","name":"…","tag":"t1"};
//        "args":[…] instead of "data" sends several arguments, neither sends none)
//   {"op":"auth","id":"a","auth":{"token":"…"}}  -> {"id":"a","event":"auth_set"}
//       (the credential the next connection attempt of `a` presents, e.g. after a refresh)
//   {"op":"drop","id":"a"}    closes the transport under the socket without a Socket.io
//       goodbye, as a lost network does: -> {"id":"a","event":"disconnect","reason":"…"},
//       and, with reconnection on, the client's own reconnection follows
//   {"op":"open","id":"a"}    connects `a` again (same socket, same options) after a
//       disconnect: -> "connected" | "connect_error" as for "connect"
//   {"op":"state","id":"a"}   -> {"id":"a","event":"state","connected":true,"sid":"…",
//                                  "transport":"websocket","active":true}
//
// Every event the server emits to a connection is printed as
//   {"id":"a","event":"server_event","name":"message:new","data":<first argument>,"args":[…]}
// (with "ack_requested":true when the server asked for an acknowledgement; none is sent).
// With "reconnection":true the client's own reconnection also prints
//   {"id":"a","event":"reconnect_attempt","attempt":1}, {"id":"a","event":"reconnect","attempt":1},
//   {"id":"a","event":"reconnect_error","message":"…"}, {"id":"a","event":"reconnect_failed"}
// and a "connected" line for each successful reconnection.
//
// `auth` is sent as given and omitted when absent; `local_address` binds the client's side of
// the connection (another loopback address). Each connection has its own engine (forceNew)
// and one transport, without upgrades, and without reconnection unless asked for, so each
// outcome is the server's answer to exactly one attempt. A server-side close prints a
// `disconnect` event too. Credentials are never printed: neither the commands nor the options
// (nor `auth`) are echoed.

import http from "node:http";
import readline from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();

function print(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function connect(command) {
  const { id, url, transport, auth, local_address: localAddress } = command;
  const reconnection = command.reconnection === true;
  const options = {
    forceNew: true,
    reconnection,
    transports: [transport],
    upgrade: false,
    timeout: command.timeout_ms ?? 10_000,
  };
  if (reconnection) {
    options.reconnectionDelay = command.reconnection_delay ?? 100;
    options.reconnectionDelayMax = command.reconnection_delay_max ?? 1_000;
    options.reconnectionAttempts = command.reconnection_attempts ?? Infinity;
    options.randomizationFactor = 0;
  }
  if (auth !== undefined) {
    options.auth = auth;
  }
  if (localAddress) {
    // Both transports open their TCP connections through the agent (ws and the XHR shim).
    options.agent = new http.Agent({ localAddress, keepAlive: true });
  }
  const socket = io(url, options);
  sockets.set(id, socket);
  socket.on("connect", () => {
    print({
      id,
      event: "connected",
      sid: socket.id,
      transport: socket.io.engine?.transport?.name ?? null,
      recovered: socket.recovered === true,
    });
  });
  socket.on("connect_error", (err) => {
    print({ id, event: "connect_error", message: err.message, data: err.data ?? null });
  });
  socket.on("disconnect", (reason, details) => {
    const line = { id, event: "disconnect", reason };
    if (details && typeof details === "object" && details.description !== undefined) {
      line.description = String(details.description?.message ?? details.description);
    }
    print(line);
  });
  socket.onAny((name, ...args) => {
    const line = { id, event: "server_event", name };
    if (args.length > 0 && typeof args[args.length - 1] === "function") {
      args.pop();
      line.ack_requested = true;
    }
    line.data = args.length > 0 ? args[0] : null;
    line.args = args;
    print(line);
  });
  if (reconnection) {
    const manager = socket.io;
    manager.on("reconnect_attempt", (attempt) => print({ id, event: "reconnect_attempt", attempt }));
    manager.on("reconnect", (attempt) => print({ id, event: "reconnect", attempt }));
    manager.on("reconnect_error", (err) => print({ id, event: "reconnect_error", message: String(err?.message ?? err) }));
    manager.on("reconnect_failed", () => print({ id, event: "reconnect_failed" }));
  }
}

function emit(command, socket) {
  const { id, event: name, tag = null } = command;
  if (typeof name !== "string") return print({ id, event: "error", message: "emit needs an event name" });
  let args = [];
  if (Array.isArray(command.args)) args = command.args;
  else if (Object.hasOwn(command, "data")) args = [command.data];
  let target = command.volatile === true ? socket.volatile : socket;
  if (command.ack === true) {
    target = target.timeout(command.timeout_ms ?? 5_000);
    target.emit(name, ...args, (err, ...responses) => {
      if (err) return print({ id, event: "ack_timeout", name, tag });
      print({ id, event: "ack", name, tag, ack: responses.length > 0 ? responses[0] : null, args: responses });
    });
  } else {
    target.emit(name, ...args);
    print({ id, event: "emitted", name, tag });
  }
}

function handle(command) {
  const socket = sockets.get(command.id);
  if (command.op !== "connect" && !socket) {
    return print({ id: command.id ?? null, event: "error", message: "no such connection" });
  }
  switch (command.op) {
    case "connect":
      connect(command);
      break;
    case "whoami":
      socket.timeout(5_000).emit("whoami", (err, ack) => {
        print(err ? { id: command.id, event: "whoami_timeout" } : { id: command.id, event: "whoami", ack });
      });
      break;
    case "emit":
      emit(command, socket);
      break;
    case "auth":
      socket.auth = command.auth;
      print({ id: command.id, event: "auth_set" });
      break;
    case "drop":
      // The engine closes its transport without a Socket.io DISCONNECT packet: to the server
      // it is a lost connection, to the client's manager a reason to reconnect.
      socket.io.engine?.close();
      break;
    case "open":
      socket.connect();
      break;
    case "state":
      print({
        id: command.id,
        event: "state",
        connected: socket.connected,
        sid: socket.id ?? null,
        transport: socket.io.engine?.transport?.name ?? null,
        active: socket.active,
      });
      break;
    case "close":
      socket.disconnect();
      break;
    default:
      print({ id: command.id ?? null, event: "error", message: "unknown op" });
  }
}

const input = readline.createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    // Never echo the line: it may hold a credential.
    return print({ id: null, event: "error", message: "a command is not JSON" });
  }
  try {
    handle(command);
  } catch (err) {
    print({ id: command.id ?? null, event: "error", message: String(err?.message ?? err) });
  }
});
input.on("close", () => {
  for (const socket of sockets.values()) socket.disconnect();
  process.exit(0);
});
