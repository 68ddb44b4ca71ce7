"""Tokens for the jwtClaim rate-limit tests (tests/rate_limit/jwt_claim.rs), made with PyJWT:
prints one JSON object with the JWKS and a token per subject (and one without `sub`)."""
import json, time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

now = int(time.time())
key = ec.generate_private_key(ec.SECP256R1())
public = json.loads(jwt.algorithms.get_default_algorithms()["ES256"].to_jwk(key.public_key()))
public.update(kid="k1", alg="ES256", use="sig")


def token(**claims):
    claims.update(iss="https://issuer.test", exp=now + 600)
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


print(json.dumps({
    "jwks": {"keys": [public]},
    "tokens": {
        "alice": token(sub="alice"),
        "alice_again": token(sub="alice", jti="second"),
        "bob": token(sub="bob"),
        "no_sub": token(scope="read"),
        "no_sub_either": token(scope="write"),
    },
}))
