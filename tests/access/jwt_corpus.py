"""The JWT attack corpus for tests/access/jwt.rs, made with PyJWT (and plain hmac where PyJWT
refuses to forge): prints one JSON object with the JWKS documents and the tokens."""
import base64, hashlib, hmac, json, sys, time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

now = int(time.time())
rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())


def jwk(key, kid, alg):
    d = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    d.update(kid=kid, alg=alg, use="sig")
    return d


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def claims(**over):
    c = {"iss": "https://issuer.test", "aud": "shop", "sub": "alice", "exp": now + 600,
         "scope": "read write", "email": "alice@example.com"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def rs(c, key=rsa_key, kid="rsa-1", alg="RS256"):
    return jwt.encode(c, key, algorithm=alg, headers={"kid": kid})


def unsigned(header, c):
    return b64(json.dumps(header).encode()) + "." + b64(json.dumps(c).encode())


pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
confused = unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims())
confused += "." + b64(hmac.new(pem, confused.encode(), hashlib.sha256).digest())

out = {
    "jwks": {"keys": [jwk(rsa_key, "rsa-1", "RS256"), jwk(ec_key, "ec-1", "ES256")]},
    "jwks_rotated": {"keys": [jwk(rsa_other, "rsa-2", "RS256")]},
    "tokens": {
        "valid": rs(claims()),
        "valid_es256": jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"}),
        "valid_rotated": rs(claims(), key=rsa_other, kid="rsa-2"),
        "within_leeway": rs(claims(exp=now - 5)),
        "alg_none": unsigned({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims()) + ".",
        "hs256_with_rsa_public_key": confused,
        "expired": rs(claims(exp=now - 3600)),
        "not_yet_valid": rs(claims(nbf=now + 3600)),
        "string_nbf": rs(claims(nbf=str(now + 3600))),
        "string_exp": rs(claims(exp=str(now + 3600))),
        "no_exp": rs(claims(exp=None)),
        "wrong_aud": rs(claims(aud="other")),
        "wrong_iss": rs(claims(iss="https://evil.test")),
        "no_iss": rs(claims(iss=None)),
        "unknown_kid": rs(claims(), kid="nope"),
        "other_key_same_kid": rs(claims(), key=rsa_other, kid="rsa-1"),
        "rs256_with_es_kid": rs(claims(), kid="ec-1"),
        "tampered": rs(claims())[:-4] + "AAAA",
        "missing_scope": rs(claims(scope="read")),
        "header_injection": rs(claims(email="a@b\r\nx-admin: 1")),
        "array_aud": rs(claims(aud=["x", "shop"])),
    },
}
json.dump(out, sys.stdout)
