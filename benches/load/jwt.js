// HS256 JWT verification in njs for nginx-full.conf.in: the gateway people build on
// nginx (JWT + limit_req), to compare with Gatehouse's full pipeline (gatehouse-full.yaml).
//
//   js_import jwt from .../jwt.js;
//   js_set $jwt_sub jwt.sub;     # the token's `sub`, or '' when it is not valid
//
// Checks, in Gatehouse's order: `Authorization: Bearer <token>`, three non-empty parts,
// the header's alg is exactly HS256 (`none` and everything else are refused) and no
// `crit`, HMAC-SHA256 of "header.payload" with the secret equals the third part
// (base64url, no padding, as the token carries it), then the payload's claims: `exp`
// required and in the future, `nbf` (when present) not in the future, both with
// Gatehouse's default 30 s leeway; `sub` a non-empty string. Unlike Gatehouse there is
// no verified-token cache: njs 0.7 has no shared memory, so the signature is checked on
// every request (what such an nginx setup does). The signature comparison is a plain
// string comparison, not constant-time, as is common in njs JWT examples.
//
// The secret is BENCH_JWT_SECRET (run.sh exports it; the config has
// `env BENCH_JWT_SECRET;`). It is read when the module is loaded, not per request;
// its bytes are the HMAC key, as Gatehouse's `secret:` uses them.
var crypto = require('crypto');

var SECRET = process.env.BENCH_JWT_SECRET || '';
var LEEWAY = 30; // seconds, Gatehouse's default

function part(s) {
    // Throws on bad base64url or bad JSON: the caller turns that into ''.
    return JSON.parse(Buffer.from(s, 'base64url').toString());
}

function sub(r) {
    var auth = r.headersIn.Authorization;
    if (!auth || SECRET === '' || auth.length < 8 || auth.slice(0, 7).toLowerCase() !== 'bearer ') {
        return '';
    }
    var parts = auth.slice(7).trim().split('.');
    if (parts.length !== 3 || !parts[0] || !parts[1] || !parts[2]) {
        return '';
    }
    var claims;
    try {
        var header = part(parts[0]);
        if (header === null || typeof header !== 'object' || header.alg !== 'HS256'
            || header.crit !== undefined) {
            return '';
        }
        var sig = crypto.createHmac('sha256', SECRET)
            .update(parts[0] + '.' + parts[1])
            .digest('base64url');
        if (sig !== parts[2]) {
            return '';
        }
        claims = part(parts[1]);
    } catch (e) {
        return '';
    }
    if (claims === null || typeof claims !== 'object') {
        return '';
    }
    var now = Date.now() / 1000;
    if (typeof claims.exp !== 'number' || now >= claims.exp + LEEWAY) {
        return '';
    }
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || now + LEEWAY < claims.nbf)) {
        return '';
    }
    if (typeof claims.sub !== 'string' || claims.sub === '') {
        return '';
    }
    return claims.sub;
}

export default { sub };
