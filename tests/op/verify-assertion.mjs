// An upstream's view of a Vestibule identity assertion, with an ordinary JWT library (jose):
// the key set is fetched from Vestibule's /.well-known/jwks.json, and the signature, `iss`,
// `aud`, `exp` and the algorithm are checked. Used by tests/integration/assertion.rs.
//
// Input (environment): JWKS_URL, ISSUER, AUDIENCE, ASSERTION.
// Output (stdout, one JSON object): { "payload": …, "header": … } when it verifies, else
// { "error": "<jose error code>" } with exit status 1.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const { JWKS_URL, ISSUER, AUDIENCE, ASSERTION } = process.env;
const keys = createRemoteJWKSet(new URL(JWKS_URL));
try {
  const { payload, protectedHeader } = await jwtVerify(ASSERTION, keys, {
    issuer: ISSUER,
    audience: AUDIENCE,
    algorithms: ['ES256'],
    maxTokenAge: '60s',
  });
  process.stdout.write(JSON.stringify({ payload, header: protectedHeader }));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: error.code ?? String(error) }));
  process.exitCode = 1;
}
