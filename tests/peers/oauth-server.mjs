// A real OAuth 2.0 authorization server (oidc-provider 8.8) on loopback, for the connector
// tests. Started by the tests as a child process; prints one line `{"port": N, "issuer": "..."}`
// on standard output once it listens.
//
// Configuration comes from the environment variable PEER_CONFIG (JSON):
//   redirect_uri     the callback registered for every client
//   access_ttl       access token lifetime in seconds (default 3600)
//   first_access_ttl the lifetime of the code exchange's access token, when it should differ
//                    (a token due for refresh at once, whose refreshed successor is not)
//   require_par      true: every authorization request must be pushed first (RFC 9126,
//                    `require_pushed_authorization_requests` in the metadata); default false
//
// Every endpoint is also served under /tenants/<tenant>/… (the tenant is recorded in
// `tenant_log`, then the request is handled as without the prefix), for templates whose URLs
// carry a per-connection parameter in their path.
//
// Clients (secrets fixed, since the tests configure them at Atom):
//   basic-client     client_secret_basic, PKCE (S256) required
//   post-client      client_secret_post, PKCE not required
//
// The consent screen is played by the test over HTTP, without a browser: the authorization
// endpoint redirects to /interaction/<uid>; a GET there with `?decision=allow&account=<id>`
// signs the account in and grants the requested scopes in one step, `?decision=deny` ends
// the interaction with `access_denied`. Cookies set by the provider must be sent back, as a
// browser would.
//
// Test-only endpoints, under /__test/:
//   GET  /__test/stats   {"token_requests": n, "revocations": n, "userinfo_requests": n,
//                         "par_requests": n, "discovery_requests": n,
//                         "token_log": [{grant_type, auth, code_verifier, at}],
//                         "tenant_log": [{tenant, path}]}
//   POST /__test/fault   {"token": "html"|"slow"|"missing_access_token"|"server_error"|
//                         "rate_limited"|"invalid_grant"|null, "revocation": "down"|null,
//                         "count": n}  the next n token (or revocation) requests fail so
//   POST /__test/delay   {"token_ms": n}  every token response waits n ms first (a
//                         provider's round trip, for the refresh stampede)

import http from 'node:http';
import { Readable } from 'node:stream';
import Provider from 'oidc-provider';

const config = JSON.parse(process.env.PEER_CONFIG || '{}');
const redirectUri = config.redirect_uri || 'http://atom.test/v1/connections/callback';
const accessTtl = Number(config.access_ttl || 3600);
const firstAccessTtl = Number(config.first_access_ttl || accessTtl);
const requirePar = config.require_par === true;

const stats = {
  token_requests: 0,
  revocations: 0,
  userinfo_requests: 0,
  par_requests: 0,
  discovery_requests: 0,
  token_log: [],
  revocation_log: [],
  tenant_log: [],
};
let fault = { token: null, revocation: null, count: 0 };
let tokenDelayMs = 0;

const accounts = {
  alice: { sub: 'alice', email: 'alice@peer.test', name: 'Alice' },
  bob: { sub: 'bob', email: 'bob@peer.test', name: 'Bob' },
};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'basic-client',
        client_secret: 'basic-client-secret-value-0123456789',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
        revocation_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'post-client',
        client_secret: 'post-client-secret-value-0123456789',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_post',
        revocation_endpoint_auth_method: 'client_secret_post',
      },
    ],
    pkce: {
      methods: ['S256'],
      required: (ctx, client) => client.clientId === 'basic-client',
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'api:read', 'api:write'],
    claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: requirePar },
    },
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: (ctx) => (ctx?.oidc?.params?.grant_type === 'authorization_code' ? firstAccessTtl : accessTtl),
      AuthorizationCode: 60,
      Grant: 86400,
      Interaction: 600,
      RefreshToken: 86400,
      Session: 86400,
    },
    cookies: { keys: ['peer-cookie-signing-key-for-tests-only'] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => {
      const account = accounts[id];
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ ...account }) };
    },
    // The peer is for tests: its errors carry no stack.
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  provider.proxy = false;

  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      let url = new URL(req.url, issuer);
      const tenant = url.pathname.match(/^\/tenants\/([^/]+)(\/.*)$/);
      if (tenant) {
        stats.tenant_log.push({ tenant: decodeURIComponent(tenant[1]), path: tenant[2] });
        req.url = `${tenant[2]}${url.search}`;
        url = new URL(req.url, issuer);
      }
      if (url.pathname.startsWith('/.well-known/')) stats.discovery_requests += 1;
      if (url.pathname === '/request' && req.method === 'POST') stats.par_requests += 1;
      if (url.pathname === '/__test/stats') return json(res, 200, stats);
      if (url.pathname === '/__test/fault' && req.method === 'POST') {
        fault = { token: null, revocation: null, count: 1, ...(await body(req)) };
        return json(res, 200, fault);
      }
      if (url.pathname === '/__test/delay' && req.method === 'POST') {
        tokenDelayMs = Number((await body(req)).token_ms || 0);
        return json(res, 200, { token_ms: tokenDelayMs });
      }
      if (url.pathname.startsWith('/interaction/')) return interaction(provider, req, res, url);
      if (url.pathname === '/token' && req.method === 'POST') {
        const raw = await body(req, true);
        const form = new URLSearchParams(raw);
        stats.token_requests += 1;
        stats.token_log.push({
          grant_type: form.get('grant_type'),
          auth: req.headers.authorization?.startsWith('Basic ') ? 'basic' : form.has('client_secret') ? 'post' : 'none',
          code_verifier: form.has('code_verifier'),
          at: Date.now(),
        });
        if (tokenDelayMs > 0) await new Promise((r) => setTimeout(r, tokenDelayMs));
        if (fault.token && fault.count > 0) {
          fault.count -= 1;
          return tokenFault(fault.token, res);
        }
        return replay(callback, req, res, raw);
      }
      if (url.pathname === '/token/revocation' && req.method === 'POST') {
        const raw = await body(req, true);
        stats.revocations += 1;
        stats.revocation_log.push({ token_type_hint: new URLSearchParams(raw).get('token_type_hint'), at: Date.now() });
        if (fault.revocation && fault.count > 0) {
          fault.count -= 1;
          res.writeHead(503, { 'content-type': 'text/html' });
          return res.end('<html><body>Service Unavailable</body></html>');
        }
        return replay(callback, req, res, raw);
      }
      if (url.pathname === '/me') stats.userinfo_requests += 1;
      return callback(req, res);
    } catch (err) {
      json(res, 500, { error: 'peer_failure', error_description: String(err && err.message) });
    }
  });

  process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);
});

function json(res, status, value) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

function body(req, raw = false) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (raw) return resolve(text);
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch (e) {
        reject(e);
      }
    });
    req.on('error', reject);
  });
}

// Hands a request whose body was already read to the provider, as if unread.
function replay(callback, req, res, raw) {
  const clone = Object.assign(Readable.from([Buffer.from(raw, 'utf8')]), {
    method: req.method,
    url: req.url,
    headers: req.headers,
    httpVersion: req.httpVersion,
    socket: req.socket,
    connection: req.socket,
  });
  return callback(clone, res);
}

function tokenFault(kind, res) {
  switch (kind) {
    case 'html':
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<!doctype html><html><body><h1>Sign in to continue</h1></body></html>');
    case 'slow':
      // Never answers within any client timeout; the socket closes when the test ends.
      return undefined;
    case 'missing_access_token':
      return json(res, 200, { token_type: 'Bearer', expires_in: 3600, refresh_token: 'rt-only' });
    case 'server_error':
      res.writeHead(502, { 'content-type': 'text/html' });
      return res.end('<html><body>Bad Gateway</body></html>');
    case 'rate_limited':
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
      return res.end(JSON.stringify({ error: 'rate_limited' }));
    case 'invalid_grant':
      return json(res, 400, {
        error: 'invalid_grant',
        error_description: 'grant request is invalid; refresh_token=leaked-secret-value access_token=abc.def.ghi',
      });
    default:
      return json(res, 500, { error: 'unknown_fault' });
  }
}

async function interaction(provider, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  const decision = url.searchParams.get('decision');
  if (decision === 'deny') {
    return provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'End-User aborted interaction' },
      { mergeWithLastSubmission: false },
    );
  }
  if (decision !== 'allow') {
    return json(res, 200, { uid: details.uid, prompt: details.prompt.name, params: details.params });
  }
  const accountId = url.searchParams.get('account') || 'alice';
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  const requested = String(details.params.scope || '').split(' ').filter(Boolean);
  grant.addOIDCScope(requested.filter((s) => ['openid', 'offline_access', 'email', 'profile'].includes(s)).join(' '));
  const resourceScopes = requested.filter((s) => s.startsWith('api:'));
  if (resourceScopes.length > 0) grant.addOIDCScope(resourceScopes.join(' '));
  const grantId = await grant.save();
  return provider.interactionFinished(
    req,
    res,
    { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}
