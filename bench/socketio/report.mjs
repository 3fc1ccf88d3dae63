// Writes bench/socketio.sh's results into the `bench:socketio` block of docs/benchmarks.md:
// atom and the Node reference side by side, with atom / Node ratios.
//
//   node report.mjs --doc FILE --cpu NAME --loadavg-start "a b c" --loadavg-end "a b c" \
//       --commit SHA --profile release --command "…" sqlite-idle=FILE.json node-idle=FILE.json … [postgres=FILE.json]

import fs from "node:fs";

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
// Each LABEL=FILE is one server's run: sqlite-* and postgres are atom's, node-* the reference's.
const atom = {};
const node = {};
const pg = {};
for (const a of args) {
  const m = /^(sqlite|node|postgres)[^=]*=(.+)$/.exec(a);
  if (!m) continue;
  const { scenarios } = JSON.parse(fs.readFileSync(m[2], "utf8"));
  Object.assign({ sqlite: atom, node, postgres: pg }[m[1]], scenarios);
}

const fmt = (x, digits = 1) =>
  x === undefined || x === null || Number.isNaN(x) ? "–" : Number(x).toLocaleString("en-US", { maximumFractionDigits: digits });
const ratio = (a, b) => (typeof a === "number" && typeof b === "number" && b !== 0 ? (a / b).toFixed(2) : "–");
const refusals = (r) => {
  const entries = Object.entries(r ?? {});
  return entries.length === 0 ? "0" : entries.map(([k, v]) => `${v} ${k}`).join(", ");
};
const row = (label, a, b, digits = 1) => `| ${label} | ${fmt(a, digits)} | ${fmt(b, digits)} | ${ratio(a, b)} |`;
const text = (label, a, b) => `| ${label} | ${a} | ${b} | |`;
const table = (rows) => ["| | atom | Node | atom / Node |", "| --- | ---: | ---: | ---: |", ...rows].join("\n");

const out = [];
const date = new Date().toISOString().slice(0, 10);
out.push(
  `Run: \`${opt("command")}\` on ${date}, ${opt("profile") ?? "release"} build of \`${opt("commit")}\`, 2 vCPUs (${opt("cpu")}), ` +
    `servers on CPU 0 and the client processes on CPU 1; load average ${opt("loadavg-start")} before and ` +
    `${opt("loadavg-end")} after (the machine is shared with other engineers' builds and tests: ` +
    "latencies and rates are noisy, memory and CPU time per unit much less so).",
);

if (atom.idle || node.idle) {
  const [a, n] = [atom.idle ?? {}, node.idle ?? {}];
  out.push(
    "",
    `**Idle authenticated connections** (websocket, \`auth.token\`, held; RSS from /proc/PID/status once settled):`,
    "",
    table([
      text("connections held", `${fmt(a.connected, 0)} of ${fmt(a.attempted, 0)}`, `${fmt(n.connected, 0)} of ${fmt(n.attempted, 0)}`),
      text("refused", refusals(a.refused), refusals(n.refused)),
      row("resident memory per connection, KB", a.kb_per_connection, n.kb_per_connection),
      row("RSS with all connected, MB", a.rss_settled_kb / 1024, n.rss_settled_kb / 1024),
      row("RSS before, MB", a.rss_before_kb / 1024, n.rss_before_kb / 1024),
      row("RSS after all closed, MB", a.rss_after_close_kb / 1024, n.rss_after_close_kb / 1024),
      row("server CPU per accepted connection, ms", a.server_cpu_ms_per_connection, n.server_cpu_ms_per_connection, 3),
      row("accepted per second", a.accepted_per_second, n.accepted_per_second, 0),
      row("client CPU while connecting, s", a.client_cpu_seconds, n.client_cpu_seconds, 2),
      row("connect p50, ms", a.connect_ms?.p50, n.connect_ms?.p50),
      row("connect p99, ms", a.connect_ms?.p99, n.connect_ms?.p99),
    ]),
  );
}
if (atom.pending || node.pending) {
  const [a, n] = [atom.pending ?? {}, node.pending ?? {}];
  out.push(
    "",
    "**Unauthenticated handshakes** (Engine.IO sessions over websocket that answer pings but never send the Socket.IO CONNECT):",
    "",
    table([
      text("sessions held", `${fmt(a.opened, 0)} of ${fmt(a.attempted, 0)}`, `${fmt(n.opened, 0)} of ${fmt(n.attempted, 0)}`),
      text("refused", refusals(a.failed), refusals(n.failed)),
      row("resident memory per session, KB", a.kb_per_handshake, n.kb_per_handshake),
      row("server CPU per session, ms", a.server_cpu_ms_per_handshake, n.server_cpu_ms_per_handshake, 3),
      text("closed by the server", fmt(a.closed_by_server, 0), fmt(n.closed_by_server, 0)),
      row("closed after (p50), s", a.closed_after_ms?.p50 / 1000, n.closed_after_ms?.p50 / 1000),
    ]),
  );
}
if (atom.broadcast || node.broadcast) {
  const [a, n] = [atom.broadcast ?? {}, node.broadcast ?? {}];
  out.push(
    "",
    `**Broadcast**: ${fmt(a.messages ?? n.messages, 0)} bodies of 1 KB sent at 2 per second to one conversation, ` +
      "delivered as `message:new` to every connected member socket (server CPU: utime + stime over the phase, per delivery):",
    "",
    table([
      text("member sockets", fmt(a.members_connected, 0), fmt(n.members_connected, 0)),
      text("deliveries (of expected)", `${fmt(a.deliveries, 0)} of ${fmt(a.deliveries_expected, 0)}`, `${fmt(n.deliveries, 0)} of ${fmt(n.deliveries_expected, 0)}`),
      row("send → delivery p50, ms", a.latency_ms?.p50, n.latency_ms?.p50),
      row("send → delivery p99, ms", a.latency_ms?.p99, n.latency_ms?.p99),
      row("send → delivery max, ms", a.latency_ms?.max, n.latency_ms?.max),
      row("server CPU per delivery, µs", a.server_cpu_us_per_delivery, n.server_cpu_us_per_delivery),
      row("client CPU over the phase, s", a.client_cpu_seconds, n.client_cpu_seconds, 2),
    ]),
  );
}
if (atom.storm || node.storm) {
  const [a, n] = [atom.storm ?? {}, node.storm ?? {}];
  out.push(
    "",
    `**Connect storm**: ${fmt(a.attempted ?? n.attempted, 0)} clients starting their connection evenly within ${fmt((a.spread_ms ?? n.spread_ms) / 1000)} s:`,
    "",
    table([
      text("connected", fmt(a.connected, 0), fmt(n.connected, 0)),
      text("refused", refusals(a.refused), refusals(n.refused)),
      row("seconds until all connected", a.seconds_until_all_connected, n.seconds_until_all_connected, 2),
      row("connect p50, ms", a.connect_ms?.p50, n.connect_ms?.p50),
      row("connect p99, ms", a.connect_ms?.p99, n.connect_ms?.p99),
      row("server CPU, s", a.server_cpu_seconds, n.server_cpu_seconds, 2),
      row("client CPU, s", a.client_cpu_seconds, n.client_cpu_seconds, 2),
    ]),
  );
}
if (atom.chat || node.chat || pg.chat) {
  const c = atom.chat ?? pg.chat ?? node.chat;
  const line = (label, r, ref) =>
    r
      ? `| ${label} | ${fmt(r.sent_per_second, 0)} | ${fmt(r.delivered_per_second, 0)} | ${fmt(r.latency_ms?.p50)} | ${fmt(r.latency_ms?.p99)} | ${ratio(r.delivered_per_second, ref?.delivered_per_second)} |`
      : `| ${label} | not run | | | | |`;
  out.push(
    "",
    `**Chat**: ${fmt(c.conversations, 0)} two-member conversations, ${fmt(c.messages / c.conversations, 0)} messages from each sender with ` +
      "8 unacknowledged at a time (a closed loop at saturation; atom stores each message and commits before the ack, the Node " +
      "reference keeps it in memory):",
    "",
    "| server | sent/s | delivered/s | p50 send → delivery, ms | p99, ms | delivered/s vs Node |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    line("atom, SQLite", atom.chat, node.chat),
    line("atom, PostgreSQL", pg.chat, node.chat),
    line("Node socket.io 4.8, in memory", node.chat, node.chat),
  );
}

const block = out.join("\n");
const doc = opt("doc");
const current = fs.readFileSync(doc, "utf8");
const start = "<!-- bench:socketio:start -->";
const end = "<!-- bench:socketio:end -->";
const i = current.indexOf(start);
const j = current.indexOf(end);
if (i < 0 || j < i) throw new Error(`${doc} has no ${start} … ${end} block`);
fs.writeFileSync(doc, `${current.slice(0, i + start.length)}\n${block}\n${current.slice(j)}`);
process.stdout.write(`${block}\n`);
