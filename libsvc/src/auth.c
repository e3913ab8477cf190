/*
 * auth.c: caller identity: bearer JWTs verified with OpenSSL (the signature)
 * and jansson (the JSON of the header and the claims), and trusted peers by
 * the names of their verified client certificates.
 *
 * The algorithm comes from the key, never from the token: an RSA key
 * verifies RS256 only, a P-256 key ES256 only. A token whose header names
 * anything else ("none", HS256 with the public key as the HMAC secret, RS256
 * against an EC key) is refused before any cryptography runs.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "svc/auth.h"
#include "svc/log.h"
#include "svc/timer.h"

#define PEER_NAME_MAX 256
#define RSA_MIN_BITS 2048
#define ES256_SIG_LEN 64

typedef enum {
    ALG_NONE = 0,
    ALG_RS256,
    ALG_ES256,
} auth_alg_t;

struct svc_auth {
    EVP_PKEY *key; /* NULL: no JWTs, only trusted peers */
    auth_alg_t alg;
    char *issuer, *audience; /* NULL: not checked */
    int64_t leeway_s;
    char *peers[SVC_AUTH_PEERS_MAX];
    size_t n_peers;
};

/* ---------- loading ---------- */

static char *
dup_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* Reads the PEM public key of path and fixes the algorithm it verifies. */
static int
load_key(svc_auth_t *auth, const char *path, svc_err_t *err)
{
    BIO *bio = BIO_new_file(path, "r");
    char group[64];
    size_t group_len = 0;

    if (bio == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "AUTH_JWT_KEY_FILE: cannot read %s", path);
        return -1;
    }
    auth->key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (auth->key == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "AUTH_JWT_KEY_FILE: %s holds no PEM public key (\"BEGIN PUBLIC KEY\")", path);
        return -1;
    }
    if (EVP_PKEY_is_a(auth->key, "RSA")) {
        if (EVP_PKEY_get_bits(auth->key) < RSA_MIN_BITS) {
            svc_err_set(err, SVC_INVALID_ARGUMENT,
                        "AUTH_JWT_KEY_FILE: the RSA key of %s has %d bits, fewer than %d", path,
                        EVP_PKEY_get_bits(auth->key), RSA_MIN_BITS);
            return -1;
        }
        auth->alg = ALG_RS256;
        return 0;
    }
    if (EVP_PKEY_is_a(auth->key, "EC") &&
        EVP_PKEY_get_group_name(auth->key, group, sizeof(group), &group_len) == 1 &&
        strcmp(group, "prime256v1") == 0) {
        auth->alg = ALG_ES256;
        return 0;
    }
    svc_err_set(err, SVC_INVALID_ARGUMENT,
                "AUTH_JWT_KEY_FILE: %s is neither an RSA key (RS256) nor an EC P-256 key (ES256)",
                path);
    return -1;
}

/* Splits "a, b,c" into auth->peers; names are 1..255 bytes without spaces or controls. */
static int
load_peers(svc_auth_t *auth, const char *list, svc_err_t *err)
{
    const char *p = list;

    while (*p != '\0') {
        const char *start, *end;
        size_t len;

        while (*p == ' ' || *p == '\t') {
            p++;
        }
        start = p;
        while (*p != '\0' && *p != ',') {
            p++;
        }
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        len = (size_t)(end - start);
        if (len == 0 || len >= PEER_NAME_MAX) {
            svc_err_set(err, SVC_INVALID_ARGUMENT,
                        "AUTH_TRUSTED_PEERS: a name is empty or longer than %d bytes",
                        PEER_NAME_MAX - 1);
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            if (!isgraph((unsigned char)start[i])) {
                svc_err_set(err, SVC_INVALID_ARGUMENT,
                            "AUTH_TRUSTED_PEERS: \"%.*s\" has a space or a control character",
                            (int)(len > 64 ? 64 : len), start);
                return -1;
            }
        }
        /* deploy/local/certs.sh puts localhost in every certificate: it names no one. */
        if (len == 9 && strncasecmp(start, "localhost", 9) == 0) {
            svc_err_set(err, SVC_INVALID_ARGUMENT,
                        "AUTH_TRUSTED_PEERS: localhost is in every certificate; name the service");
            return -1;
        }
        if (auth->n_peers == SVC_AUTH_PEERS_MAX) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "AUTH_TRUSTED_PEERS: more than %d names",
                        SVC_AUTH_PEERS_MAX);
            return -1;
        }
        auth->peers[auth->n_peers] = strndup(start, len);
        if (auth->peers[auth->n_peers] == NULL) {
            svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
            return -1;
        }
        auth->n_peers++;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                svc_err_set(err, SVC_INVALID_ARGUMENT, "AUTH_TRUSTED_PEERS: ends with a comma");
                return -1;
            }
        }
    }
    return 0;
}

svc_auth_t *
svc_auth_create(const svc_auth_opts_t *opts, svc_err_t *err)
{
    svc_auth_t *auth = calloc(1, sizeof(*auth));

    if (auth == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    auth->leeway_s = opts->leeway_s < 0 ? 0 : opts->leeway_s;
    auth->issuer = dup_or_null(opts->issuer);
    auth->audience = dup_or_null(opts->audience);
    if ((opts->issuer != NULL && opts->issuer[0] != '\0' && auth->issuer == NULL) ||
        (opts->audience != NULL && opts->audience[0] != '\0' && auth->audience == NULL)) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        svc_auth_destroy(auth);
        return NULL;
    }
    if ((opts->jwt_key_file != NULL && opts->jwt_key_file[0] != '\0' &&
         load_key(auth, opts->jwt_key_file, err) != 0) ||
        (opts->trusted_peers != NULL && load_peers(auth, opts->trusted_peers, err) != 0)) {
        svc_auth_destroy(auth);
        return NULL;
    }
    return auth;
}

svc_auth_t *
svc_auth_create_or_exit(const svc_auth_opts_t *opts, const char *prog)
{
    svc_err_t err;
    svc_auth_t *auth = svc_auth_create(opts, &err);
    char peers[16];

    if (auth == NULL) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit(2);
    }
    if (svc_auth_on(auth)) {
        snprintf(peers, sizeof(peers), "%zu", auth->n_peers);
        svc_log_kv(SVC_LOG_INFO, "caller identity on", "jwt_alg",
                   auth->key != NULL ? svc_auth_alg(auth) : "none", "trusted_peers", peers, NULL);
    }
    return auth;
}

void
svc_auth_destroy(svc_auth_t *auth)
{
    if (auth == NULL) {
        return;
    }
    EVP_PKEY_free(auth->key);
    free(auth->issuer);
    free(auth->audience);
    for (size_t i = 0; i < auth->n_peers; i++) {
        free(auth->peers[i]);
    }
    free(auth);
}

bool
svc_auth_on(const svc_auth_t *auth)
{
    return auth != NULL && (auth->key != NULL || auth->n_peers > 0);
}

const char *
svc_auth_alg(const svc_auth_t *auth)
{
    if (auth == NULL || auth->key == NULL) {
        return NULL;
    }
    return auth->alg == ALG_RS256 ? "RS256" : "ES256";
}

/* ---------- verifying a token ---------- */

static int
b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

/*
 * Decodes unpadded base64url (RFC 7515 §2) into a malloc'd buffer of *out_len
 * bytes (plus a NUL). Only the canonical encoding is taken: no padding, no
 * other characters, zero bits left over. NULL when the text is not one.
 */
static unsigned char *
b64url_decode(const char *s, size_t len, size_t *out_len)
{
    unsigned char *out;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;

    if (len % 4 == 1) {
        return NULL;
    }
    out = malloc(len / 4 * 3 + 3);
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)s[i]);

        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

/* Decodes one base64url part holding a JSON object. NULL when it is not one. */
static json_t *
decode_object(const char *s, size_t len)
{
    size_t n;
    unsigned char *raw = b64url_decode(s, len, &n);
    json_t *obj;

    if (raw == NULL) {
        return NULL;
    }
    obj = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* The header must name the key's algorithm and ask for no extension we do not know. */
static int
check_header(const svc_auth_t *auth, const json_t *header, svc_err_t *err)
{
    const char *want = svc_auth_alg(auth);
    const json_t *alg = json_object_get(header, "alg");

    if (!json_is_string(alg) || strcmp(json_string_value(alg), want) != 0) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: its algorithm must be %s", want);
        return -1;
    }
    if (json_object_get(header, "crit") != NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: critical header extensions");
        return -1;
    }
    return 0;
}

/* ES256 signs r || s (32 bytes each); OpenSSL verifies their DER sequence. */
static unsigned char *
es256_to_der(const unsigned char *sig, size_t sig_len, int *der_len)
{
    ECDSA_SIG *es;
    BIGNUM *r, *s;
    unsigned char *der = NULL;

    if (sig_len != ES256_SIG_LEN) {
        return NULL;
    }
    es = ECDSA_SIG_new();
    r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
    s = BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return NULL;
    }
    *der_len = i2d_ECDSA_SIG(es, &der);
    ECDSA_SIG_free(es);
    return *der_len > 0 ? der : NULL;
}

/* Verifies sig over signed[0..signed_len) with the key: 1 when it verifies, else 0. */
static int
signature_ok(const svc_auth_t *auth, const char *signed_part, size_t signed_len,
             const unsigned char *sig, size_t sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *der = NULL;
    int der_len = 0, ok = 0;

    if (md == NULL) {
        return 0;
    }
    if (auth->alg == ALG_ES256) {
        der = es256_to_der(sig, sig_len, &der_len);
        if (der == NULL) {
            EVP_MD_CTX_free(md);
            return 0;
        }
        sig = der;
        sig_len = (size_t)der_len;
    }
    ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, auth->key) == 1 &&
         EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)signed_part, signed_len) == 1;
    OPENSSL_free(der);
    EVP_MD_CTX_free(md);
    return ok;
}

/* aud is a string or an array of strings; one must equal want. */
static bool
audience_ok(const json_t *aud, const char *want)
{
    size_t i;
    const json_t *v;

    if (json_is_string(aud)) {
        return strcmp(json_string_value(aud), want) == 0;
    }
    if (json_is_array(aud)) {
        json_array_foreach(aud, i, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), want) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* exp, nbf, iss, aud and sub of verified claims. */
static int
check_claims(const svc_auth_t *auth, const json_t *claims, int64_t now_s,
             char sub[SVC_AUTH_SUB_MAX], svc_err_t *err)
{
    const json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
    const json_t *s = json_object_get(claims, "sub");
    double now = (double)now_s, leeway = (double)auth->leeway_s;

    if (!json_is_number(exp)) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: no exp");
        return -1;
    }
    if (now >= json_number_value(exp) + leeway) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: expired");
        return -1;
    }
    if (nbf != NULL && (!json_is_number(nbf) || now + leeway < json_number_value(nbf))) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: not valid yet");
        return -1;
    }
    if (auth->issuer != NULL) {
        const json_t *iss = json_object_get(claims, "iss");

        if (!json_is_string(iss) || strcmp(json_string_value(iss), auth->issuer) != 0) {
            svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: wrong issuer");
            return -1;
        }
    }
    if (auth->audience != NULL && !audience_ok(json_object_get(claims, "aud"), auth->audience)) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: not for this audience");
        return -1;
    }
    if (!json_is_string(s) || json_string_length(s) == 0 ||
        json_string_length(s) >= SVC_AUTH_SUB_MAX) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: no usable sub");
        return -1;
    }
    memcpy(sub, json_string_value(s), json_string_length(s) + 1);
    return 0;
}

int
svc_auth_verify(const svc_auth_t *auth, const char *token, int64_t now_s,
                char sub[SVC_AUTH_SUB_MAX], svc_err_t *err)
{
    const char *dot1, *dot2, *sig_text;
    size_t len = strnlen(token, SVC_AUTH_TOKEN_MAX + 1), sig_len = 0;
    unsigned char *sig = NULL;
    json_t *header = NULL, *claims = NULL;
    int rc = -1;

    if (svc_auth_alg(auth) == NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "no key to verify tokens with");
        return -1;
    }
    dot1 = memchr(token, '.', len);
    dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (len > SVC_AUTH_TOKEN_MAX || dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: not a compact JWS");
        return -1;
    }
    sig_text = dot2 + 1;
    header = decode_object(token, (size_t)(dot1 - token));
    if (header == NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: bad header");
        goto out;
    }
    if (check_header(auth, header, err) != 0) {
        goto out;
    }
    sig = b64url_decode(sig_text, len - (size_t)(sig_text - token), &sig_len);
    if (sig == NULL || sig_len == 0 ||
        !signature_ok(auth, token, (size_t)(dot2 - token), sig, sig_len)) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: bad signature");
        goto out;
    }
    claims = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (claims == NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "invalid token: bad claims");
        goto out;
    }
    rc = check_claims(auth, claims, now_s, sub, err);
out:
    free(sig);
    json_decref(header);
    json_decref(claims);
    return rc;
}

/* ---------- a call's identity ---------- */

/* sub as a user id: canonical decimal 1..INT64_MAX, else -1. */
static int64_t
sub_user_id(const char *sub)
{
    char *end;
    long long v;

    if (sub[0] < '1' || sub[0] > '9') {
        return -1;
    }
    for (const char *p = sub; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
    }
    errno = 0;
    v = strtoll(sub, &end, 10);
    return errno == 0 && *end == '\0' ? (int64_t)v : -1;
}

static bool
trusted_peer(const svc_auth_t *auth, svc_call_t *call)
{
    const char *names[SVC_AUTH_PEERS_MAX];
    size_t n;

    if (auth->n_peers == 0) {
        return false;
    }
    n = svc_call_peer_names(call, names, SVC_AUTH_PEERS_MAX);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < auth->n_peers; j++) {
            if (names[i] != NULL && strcmp(names[i], auth->peers[j]) == 0) {
                return true;
            }
        }
    }
    return false;
}

int
svc_auth_caller(const svc_auth_t *auth, svc_call_t *call, svc_auth_caller_t *out, svc_err_t *err)
{
    const char *value;
    char sub[SVC_AUTH_SUB_MAX];

    out->any_user = true;
    out->peer = false;
    out->user_id = -1;
    if (!svc_auth_on(auth)) {
        return 0;
    }
    if (trusted_peer(auth, call)) {
        out->peer = true;
        return 0;
    }
    out->any_user = false;
    if (auth->key == NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "this call needs a trusted client certificate");
        return -1;
    }
    value = svc_call_metadata(call, "authorization");
    if (value == NULL) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "missing authorization: Bearer <token>");
        return -1;
    }
    if (strncasecmp(value, "Bearer ", 7) != 0) {
        svc_err_set(err, SVC_UNAUTHENTICATED, "authorization is not a bearer token");
        return -1;
    }
    value += 7;
    while (*value == ' ') {
        value++;
    }
    if (svc_auth_verify(auth, value, svc_now_unix_ms() / 1000, sub, err) != 0) {
        return -1;
    }
    out->user_id = sub_user_id(sub);
    return 0;
}

bool
svc_auth_caller_may(const svc_auth_caller_t *caller, int64_t user_id)
{
    return caller->any_user || (caller->user_id > 0 && caller->user_id == user_id);
}

int
svc_auth_check_user(const svc_auth_t *auth, svc_call_t *call, int64_t user_id, svc_err_t *err)
{
    svc_auth_caller_t caller;

    if (svc_auth_caller(auth, call, &caller, err) != 0) {
        return -1;
    }
    if (!svc_auth_caller_may(&caller, user_id)) {
        svc_err_set(err, SVC_PERMISSION_DENIED, "the token is not user %" PRId64 "'s", user_id);
        return -1;
    }
    return 0;
}

int
svc_auth_check_peer(const svc_auth_t *auth, svc_call_t *call, const char *what, svc_err_t *err)
{
    if (!svc_auth_on(auth) || trusted_peer(auth, call)) {
        return 0;
    }
    svc_err_set(err, SVC_PERMISSION_DENIED, "%s is reserved for trusted peers", what);
    return -1;
}
