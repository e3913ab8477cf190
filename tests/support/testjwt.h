/*
 * testjwt.h: JWTs made in the test, for the caller-identity tests. Key pairs
 * from OpenSSL, public keys written as PEM for AUTH_JWT_KEY_FILE, and tokens
 * signed here (RS256, ES256, HS256 with any secret, or "none") from the JSON
 * the test writes, so a test can make every kind of bad token too.
 */
#ifndef TESTJWT_H
#define TESTJWT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* A new RSA key pair of bits bits; NULL on failure. Free with EVP_PKEY_free. */
EVP_PKEY *testjwt_rsa_key(int bits);
/* A new EC key pair on curve ("P-256", "P-384"); NULL on failure. */
EVP_PKEY *testjwt_ec_key(const char *curve);
/* Writes the public half of key to path as PEM ("BEGIN PUBLIC KEY"). 0 or -1. */
int testjwt_write_public(EVP_PKEY *key, const char *path);
/* The public half as PEM text, malloc'd (the classic HS256 confusion secret). */
char *testjwt_public_pem(EVP_PKEY *key, size_t *len);

/*
 * base64url(header_json) "." base64url(payload_json) "." signature, malloc'd.
 * alg: "RS256" or "ES256" sign with key (ES256 as raw r||s), "HS256" with
 * secret[0..secret_len), "none" leaves the signature empty. The header is
 * written as given (it need not name alg). NULL on failure.
 */
char *testjwt_sign(const char *alg, EVP_PKEY *key, const void *secret, size_t secret_len,
                   const char *header_json, const char *payload_json);

/*
 * The usual token: header {"alg":alg,"typ":"JWT"}, claims sub, exp = now_s +
 * exp_in_s, nbf = now_s + nbf_in_s (omitted when nbf_in_s is INT64_MIN), iss
 * and aud when not NULL. Signed with key by alg ("RS256" or "ES256").
 */
char *testjwt_token(const char *alg, EVP_PKEY *key, const char *sub, int64_t now_s,
                    int64_t exp_in_s, int64_t nbf_in_s, const char *iss, const char *aud);
/* "Bearer " + token, malloc'd; token is freed. */
char *testjwt_bearer(char *token);

#endif
