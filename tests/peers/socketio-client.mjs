// A real socket.io-client that Atom's integration tests drive (crates/atom/tests/it/realtime.rs).
//
// Commands arrive on stdin, one JSON object a line; outcomes leave on stdout, one JSON object
// a line, each naming the connection (`id`) it concerns:
//
//   {"op":"connect","id":"a","url":"http://127.0.0.1:8000","transport":"websocket"|"polling",
//    "auth":{"token":"…"},"local_address":"127.0.0.2"}
//       -> {"id":"a","event":"connected","sid":"…","transport":"websocket"}
//        | {"id":"a","event":"connect_error","message":"unauthorized","data":null}
//   {"op":"whoami","id":"a"}  -> {"id":"a","event":"whoami","ack":{"user_id":"…","role":"user"}}
//   {"op":"close","id":"a"}   -> {"id":"a","event":"disconnect","reason":"io client disconnect"}
//
// `auth` is sent as given and omitted when absent; `local_address` binds the client's side of
// the connection (another loopback address). Each connection has its own engine (forceNew)
// and one transport, without upgrades or reconnection, so each outcome is the server's
// answer to exactly one attempt. A server-side close prints a `disconnect` event too.
// Credentials are never printed: neither the commands nor the options are echoed.

import http from "node:http";
import readline from "node:readline";
import { io } from "socket.io-client";

const sockets = new Map();

function print(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function connect(command) {
  const { id, url, transport, auth, local_address: localAddress } = command;
  const options = {
    forceNew: true,
    reconnection: false,
    transports: [transport],
    upgrade: false,
    timeout: 10_000,
  };
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
    print({ id, event: "connected", sid: socket.id, transport: socket.io.engine?.transport?.name ?? null });
  });
  socket.on("connect_error", (err) => {
    print({ id, event: "connect_error", message: err.message, data: err.data ?? null });
  });
  socket.on("disconnect", (reason) => {
    print({ id, event: "disconnect", reason });
  });
}

function handle(command) {
  const socket = sockets.get(command.id);
  switch (command.op) {
    case "connect":
      connect(command);
      break;
    case "whoami":
      if (!socket) return print({ id: command.id, event: "error", message: "no such connection" });
      socket.timeout(5_000).emit("whoami", (err, ack) => {
        print(err ? { id: command.id, event: "whoami_timeout" } : { id: command.id, event: "whoami", ack });
      });
      break;
    case "close":
      if (!socket) return print({ id: command.id, event: "error", message: "no such connection" });
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
