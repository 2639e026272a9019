// panva's oidc-provider, configured as the independent authorization server of the interop tests.
//
//   node server.mjs '<JSON configuration>'
//
// The configuration comes from tests/interop/conftest.py:
//   {
//     "port": 41234,                          // 0: pick a free port (the issuer follows it)
//     "resource": "urn:fastapi-zitadel:items-api",
//     "jwt_resource": "urn:fastapi-zitadel:items-api-jwt",   // its access tokens are JWTs
//     "resource_scopes": ["items:read", "items:write"],
//     "introspectors": [                      // clients allowed to call the introspection endpoint
//       {"client_id": "...", "jwk": {...RSA public JWK with kid...}},        // private_key_jwt
//       {"client_id": "...", "client_secret": "..."}                         // client_secret_basic
//     ],
//     "callers": [                            // machine-to-machine clients (client_credentials)
//       {"client_id": "...", "client_secret": "...", "ttl": 600, "extra_claims": {...}}
//     ]
//   }
//
// Prints `READY <issuer>` on stdout once listening; logs to stderr; stops on SIGTERM/SIGINT.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const HOST = '127.0.0.1';

function fail(message) {
  process.stderr.write(`interop server: ${message}\n`);
  process.exit(2);
}

const raw = process.argv[2];
if (!raw) fail('usage: node server.mjs \'<JSON configuration>\'');
let config;
try {
  config = JSON.parse(raw);
} catch (error) {
  fail(`the configuration is not JSON: ${error.message}`);
}

const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/oidc-provider/package.json', import.meta.url), 'utf8'),
);

const callers = new Map(config.callers.map((caller) => [caller.client_id, caller]));
const introspectors = new Set(config.introspectors.map((client) => client.client_id));

function introspectorMetadata(client) {
  const common = {
    client_id: client.client_id,
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  };
  if (client.jwk) {
    return {
      ...common,
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS256',
      jwks: { keys: [client.jwk] },
    };
  }
  return {
    ...common,
    token_endpoint_auth_method: 'client_secret_basic',
    client_secret: client.client_secret,
  };
}

function callerMetadata(caller) {
  return {
    client_id: caller.client_id,
    client_secret: caller.client_secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  };
}

// The provider's own signing key (unused by opaque tokens, but oidc-provider wants one rather
// than falling back to its published development key).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-signing', use: 'sig' };

const server = createServer();
server.on('error', (error) => fail(`cannot listen on ${HOST}:${config.port}: ${error.message}`));
server.listen(config.port, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;

  const provider = new Provider(issuer, {
    clients: [
      ...config.introspectors.map(introspectorMetadata),
      ...config.callers.map(callerMetadata),
    ],
    clientAuthMethods: ['client_secret_basic', 'private_key_jwt'],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Only the resource server's own clients may introspect (RFC 7662 §4).
        allowedPolicy: async (ctx, client) => introspectors.has(client.clientId),
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, resource) => {
          if (resource === config.jwt_resource) {
            // RFC 9068 JWT access tokens (`typ: at+jwt`), RS256 with the key below. oidc-provider
            // refuses to introspect or revoke them (lib/shared/reject_structured_tokens.js:
            // 400 unsupported_token_type): they are meant to be verified by the resource server.
            return {
              scope: config.resource_scopes.join(' '),
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: 'RS256' } },
            };
          }
          if (resource !== config.resource) {
            throw new Provider.errors.InvalidTarget(`unknown resource ${resource}`);
          }
          return {
            scope: config.resource_scopes.join(' '),
            accessTokenFormat: 'opaque',
          };
        },
      },
    },
    ttl: {
      // Per caller, so the expiry test can have a token that lives only a couple of seconds.
      ClientCredentials: (ctx, token, client) => callers.get(client.clientId)?.ttl ?? 600,
    },
    // ZITADEL-style claims (e.g. the project role claim) added to the tokens of a caller; they
    // come back in the introspection answer.
    extraTokenClaims: async (ctx, token) => callers.get(token.clientId)?.extra_claims,
  });

  provider.on('server_error', (ctx, error) => {
    process.stderr.write(`server_error: ${error.stack}\n`);
  });
  for (const event of ['introspection.error', 'revocation.error', 'grant.error']) {
    provider.on(event, (ctx, error) => {
      process.stderr.write(`${event}: ${error.message} (${error.error_detail ?? ''})\n`);
    });
  }

  server.on('request', provider.callback());
  process.stdout.write(`READY ${issuer} oidc-provider@${version}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
  });
}
