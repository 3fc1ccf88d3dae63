// The thousand-caller refresh (bench/refresh.sh): a user's connection to the real OAuth peer
// (oidc-provider, tests/peers) holds an access token that is due, and BENCH_CALLERS callers
// ask atom for it at once (POST /v1/connections/{id}/refresh, spread over the atom nodes
// given). Per round: how many token requests the provider saw (must be 1) and the time until
// every caller had its answer. Against it, the provider's own round trip (a refresh grant
// sent straight to the peer by this script, timed the same way), and the same thousand calls
// once the token is fresh (atom's own cost of answering them, without any refresh).
//
// Then the agent's token read, `GET /v1/connections/{id}/token` on the first node, one call at
// a time: per round, the first call after a reconnection (the token due: refreshed at the
// provider, stored, then returned), then BENCH_TOKEN_READS calls with the token fresh (the row
// read from the database, decrypted, the read audited); against them, as many
// `GET /v1/connections/{id}` (the same row read, no decryption, no audit row).
//
//   node bench/refresh.mjs <peer issuer> <atom base URL>...
//
// Knobs: BENCH_CALLERS (1000), BENCH_ROUNDS (5), BENCH_DIRECT (20 direct refresh grants),
// BENCH_TOKEN_READS (200). Prints one JSON object.

const [issuer, ...nodes] = process.argv.slice(2);
const callers = Number(process.env.BENCH_CALLERS || 1000);
const rounds = Number(process.env.BENCH_ROUNDS || 5);
const directRuns = Number(process.env.BENCH_DIRECT || 20);
const tokenReads = Number(process.env.BENCH_TOKEN_READS || 200);
const publicUrl = 'http://atom.bench';
const callback = `${publicUrl}/v1/connections/callback`;
const [clientId, clientSecret] = ['post-client', 'post-client-secret-value-0123456789'];

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
};

async function json(response, what) {
  const text = await response.text();
  if (!response.ok) throw new Error(`${what}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : {};
}

async function stats() {
  return json(await fetch(`${issuer}/__test/stats`), 'peer stats');
}

// The browser at the peer: follows redirects through the consent screen (allowing as
// alice), sending the provider's cookies back; the URL it finally sends to our callback.
async function consent(url) {
  const cookies = new Map();
  for (let i = 0; i < 10; i++) {
    if (url.startsWith(publicUrl)) return url;
    const target = url.includes('/interaction/') && !url.includes('decision=') ? `${url}?decision=allow&account=alice` : url;
    const cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    const response = await fetch(target, { redirect: 'manual', headers: { cookie } });
    for (const set of response.headers.getSetCookie()) {
      const [pair] = set.split(';');
      const at = pair.indexOf('=');
      cookies.set(pair.slice(0, at).trim(), pair.slice(at + 1).trim());
    }
    const location = response.headers.get('location');
    if (!location) throw new Error(`the peer stopped redirecting at ${target}: ${response.status}`);
    url = location.startsWith('/') ? new URL(location, target).toString() : location;
  }
  throw new Error('too many redirects');
}

// (Re)connects the user: the code exchange's token is due at once (the peer's first_access_ttl).
async function connect(node, token) {
  const started = await json(
    await fetch(`${node}/v1/connections/authorize`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ provider: 'peer' }),
    }),
    'authorize',
  );
  const back = await consent(started.authorization_url);
  const landed = await fetch(`${node}${back.slice(publicUrl.length)}`, { redirect: 'manual' });
  const location = landed.headers.get('location');
  if (location) return new URL(location).searchParams.get('connection_id');
  const body = await json(landed, 'callback');
  return body.connection.id;
}

// The provider's own round trip: this script as the client, its own grant, refreshed
// `directRuns` times (each answer rotates the refresh token).
async function direct() {
  const auth = new URL(`${issuer}/auth`);
  auth.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: callback,
    scope: 'openid offline_access email', prompt: 'consent', state: 'bench',
  }).toString();
  const back = new URL(await consent(auth.toString()));
  const form = (params) => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ ...params, client_id: clientId, client_secret: clientSecret }).toString(),
  });
  let tokens = await json(
    await fetch(`${issuer}/token`, form({ grant_type: 'authorization_code', code: back.searchParams.get('code'), redirect_uri: callback })),
    'direct exchange',
  );
  const times = [];
  for (let i = 0; i < directRuns; i++) {
    const t0 = process.hrtime.bigint();
    tokens = await json(await fetch(`${issuer}/token`, form({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token })), 'direct refresh');
    times.push(ms(t0));
  }
  return times;
}

// One call at a time: the milliseconds each took; every answer must be a 200.
async function sequential(url, token, count) {
  const times = [];
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    await json(await fetch(url, { headers: { authorization: `Bearer ${token}` } }), url);
    times.push(ms(t0));
  }
  return times;
}

// The token route per round: the due token's first read, then fresh reads against the
// connection's own metadata read.
async function tokenRoute(node, token) {
  const rounds_ = [];
  for (let round = 0; round < rounds; round++) {
    const id = await connect(node, token);
    const before = (await stats()).token_log.filter((t) => t.grant_type === 'refresh_token').length;
    const t0 = process.hrtime.bigint();
    const first = await json(
      await fetch(`${node}/v1/connections/${id}/token`, { headers: { authorization: `Bearer ${token}` } }),
      'token (due)',
    );
    const due = ms(t0);
    const after = (await stats()).token_log.filter((t) => t.grant_type === 'refresh_token').length;
    if (after - before !== 1 || !first.access_token) throw new Error(`the due read made ${after - before} refreshes`);
    // Interleaved in halves, so that drift on a shared machine falls on both.
    const fresh = [];
    const metadata = [];
    for (let half = 0; half < 2; half++) {
      fresh.push(...(await sequential(`${node}/v1/connections/${id}/token`, token, tokenReads / 2)));
      metadata.push(...(await sequential(`${node}/v1/connections/${id}`, token, tokenReads / 2)));
    }
    const after2 = (await stats()).token_log.filter((t) => t.grant_type === 'refresh_token').length;
    if (after2 !== after) throw new Error('a fresh token was refreshed again');
    rounds_.push({
      due_ms: Number(due.toFixed(2)),
      fresh_p50_ms: Number(percentile(fresh, 0.5).toFixed(3)),
      fresh_p99_ms: Number(percentile(fresh, 0.99).toFixed(3)),
      metadata_p50_ms: Number(percentile(metadata, 0.5).toFixed(3)),
      metadata_p99_ms: Number(percentile(metadata, 0.99).toFixed(3)),
    });
  }
  const med = (k) => Number(median(rounds_.map((r) => r[k])).toFixed(3));
  return {
    reads_per_round: tokenReads,
    rounds: rounds_,
    due_ms_median: med('due_ms'),
    fresh_p50_ms_median: med('fresh_p50_ms'),
    fresh_p99_ms_median: med('fresh_p99_ms'),
    metadata_p50_ms_median: med('metadata_p50_ms'),
    metadata_p99_ms_median: med('metadata_p99_ms'),
  };
}

async function main() {
  const email = `bench-${Date.now()}@example.com`;
  const password = 'correct horse battery staple';
  await json(
    await fetch(`${nodes[0]}/v1/auth/register`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
    }),
    'register',
  );
  const login = await json(
    await fetch(`${nodes[0]}/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }),
    }),
    'login',
  );
  const token = login.access_token;
  const results = [];
  for (let round = 0; round < rounds; round++) {
    const id = await connect(nodes[0], token);
    const before = (await stats()).token_log.filter((t) => t.grant_type === 'refresh_token').length;
    const stampede = async () => Promise.all(
      Array.from({ length: callers }, (_, i) =>
        fetch(`${nodes[i % nodes.length]}/v1/connections/${id}/refresh`, {
          method: 'POST', headers: { authorization: `Bearer ${token}` },
        }).then(async (r) => {
          const body = await r.json();
          return { status: r.status, expires: body.expires_at, code: body.code };
        }),
      ),
    );
    const t0 = process.hrtime.bigint();
    const answers = await stampede();
    const elapsed = ms(t0);
    // The same thousand calls once the token is fresh: no provider call, the route's own cost.
    const t1 = process.hrtime.bigint();
    const fresh = await stampede();
    const freshElapsed = ms(t1);
    const after = (await stats()).token_log.filter((t) => t.grant_type === 'refresh_token').length;
    const ok = answers.filter((a) => a.status === 200).length;
    const expiries = new Set(answers.map((a) => a.expires));
    const refused = {};
    for (const a of answers.filter((x) => x.status !== 200)) {
      const key = `${a.status} ${a.code || ''}`.trim();
      refused[key] = (refused[key] || 0) + 1;
    }
    results.push({
      provider_refreshes: after - before, ok, refused, distinct_expiries: expiries.size, all_answered_ms: Number(elapsed.toFixed(1)),
      fresh_ok: fresh.filter((a) => a.status === 200).length, fresh_all_answered_ms: Number(freshElapsed.toFixed(1)),
    });
  }
  const directTimes = await direct();
  const tokenRead = await tokenRoute(nodes[0], token);
  console.log(JSON.stringify({
    nodes: nodes.length,
    callers,
    rounds: results,
    provider_refreshes_per_round: [...new Set(results.map((r) => r.provider_refreshes))],
    all_answered_ms_median: Number(median(results.map((r) => r.all_answered_ms)).toFixed(1)),
    fresh_all_answered_ms_median: Number(median(results.map((r) => r.fresh_all_answered_ms)).toFixed(1)),
    provider_round_trip_ms_median: Number(median(directTimes).toFixed(2)),
    token_read: tokenRead,
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
