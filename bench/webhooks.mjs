// Load generator of bench/webhooks.sh: signed Slack Events API callbacks (v0 signing secret,
// a fresh event id each) posted to atom's webhook receiver, or plain GET /health as the
// comparison, by CONCURRENCY keep-alive workers for SECS seconds. Prints one JSON line:
// requests per second, p50/p99 latency (ms), and the count of non-2xx answers.
//
//   node bench/webhooks.mjs <base-url> <health|routed|unrouted> <secs> <concurrency>
//   (BENCH_SECRET: the signing secret; BENCH_TEAM: the routed team id)
import crypto from 'node:crypto';
import http from 'node:http';

const [base, mode, secsArg, concurrencyArg] = process.argv.slice(2);
const secs = Number(secsArg || 10);
const concurrency = Number(concurrencyArg || 16);
const secret = process.env.BENCH_SECRET || '';
const team = mode === 'routed' ? process.env.BENCH_TEAM || 'TBENCH' : 'TNOBODY';
const url = new URL(base);
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const run = crypto.randomBytes(6).toString('hex');

function request(n) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    let options;
    let body = '';
    if (mode === 'health') {
      options = { method: 'GET', path: '/health', headers: {} };
    } else {
      body = JSON.stringify({ type: 'event_callback', team_id: team, event_id: `Ev${run}${n}`,
        event: { type: 'message', text: 'benchmark' } });
      const ts = Math.floor(Date.now() / 1000).toString();
      const signature = 'v0=' + crypto.createHmac('sha256', secret).update(`v0:${ts}:${body}`).digest('hex');
      options = { method: 'POST', path: '/v1/webhooks/slack', headers: {
        'content-type': 'application/json', 'content-length': Buffer.byteLength(body),
        'x-slack-request-timestamp': ts, 'x-slack-signature': signature } };
    }
    const req = http.request({ host: url.hostname, port: url.port, agent, ...options }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ok: res.statusCode >= 200 && res.statusCode < 300,
        ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    });
    req.on('error', () => resolve({ ok: false, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    req.end(body);
  });
}

const deadline = Date.now() + secs * 1000;
let counter = 0;
const latencies = [];
let errors = 0;
async function worker() {
  while (Date.now() < deadline) {
    const r = await request(counter++);
    latencies.push(r.ms);
    if (!r.ok) errors += 1;
  }
}
const began = Date.now();
await Promise.all(Array.from({ length: concurrency }, worker));
const elapsed = (Date.now() - began) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] || 0;
console.log(JSON.stringify({ mode, rps: Math.round(latencies.length / elapsed), p50_ms: +pct(0.5).toFixed(2),
  p99_ms: +pct(0.99).toFixed(2), errors, requests: latencies.length }));
agent.destroy();
