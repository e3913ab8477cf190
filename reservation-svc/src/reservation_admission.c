/*
 * reservation_admission.c: signing and checking admission tokens with
 * OpenSSL's HMAC-SHA256. Parsing is strict (decimal numbers without signs
 * or leading zeros, exactly 64 lowercase hex digits), so one token has one
 * spelling and a token cannot be stretched to carry anything else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "reservation_admission.h"

#define MAC_HEX 64 /* SHA-256: 32 bytes */
#define PREFIX "v1."

int
rsv_admission_key_set(rsv_admission_key_t *k, const void *key, size_t len, svc_err_t *err)
{
    if (len < RSV_ADMISSION_KEY_MIN || len > RSV_ADMISSION_KEY_MAX) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "the admission key must be %d to %d bytes, not %zu",
                    RSV_ADMISSION_KEY_MIN, RSV_ADMISSION_KEY_MAX, len);
        return -1;
    }
    memcpy(k->key, key, len);
    k->len = len;
    return 0;
}

int
rsv_admission_key_load(rsv_admission_key_t *k, const char *path, svc_err_t *err)
{
    unsigned char buf[RSV_ADMISSION_KEY_MAX + 2];
    FILE *f = fopen(path, "rb");
    size_t n;
    int rc;

    if (f == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "cannot read the admission key file %s: %s", path,
                    strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
    }
    rc = rsv_admission_key_set(k, buf, n, err);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

int
rsv_admission_key_random(rsv_admission_key_t *k, svc_err_t *err)
{
    if (RAND_bytes(k->key, RSV_ADMISSION_KEY_MIN) != 1) {
        svc_err_set(err, SVC_INTERNAL, "no random bytes for an admission key");
        return -1;
    }
    k->len = RSV_ADMISSION_KEY_MIN;
    return 0;
}

int
rsv_admin_token_load(const char *env, const char *path, char *buf, svc_err_t *err)
{
    size_t n;

    if (path != NULL && path[0] != '\0') {
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "cannot read ADMIN_TOKEN_FILE %s: %s", path,
                        strerror(errno));
            return -1;
        }
        n = fread(buf, 1, RSV_ADMIN_TOKEN_MAX + 1, f);
        fclose(f);
        if (n > 0 && buf[n - 1] == '\n') {
            n--;
        }
        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }
    } else if (env != NULL && env[0] != '\0') {
        n = strnlen(env, RSV_ADMIN_TOKEN_MAX + 1);
        memcpy(buf, env, n);
    } else {
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "no admin token: set ADMIN_TOKEN_FILE (a file holding it) or ADMIN_TOKEN");
        return -1;
    }
    if (n < RSV_ADMIN_TOKEN_MIN || n > RSV_ADMIN_TOKEN_MAX || memchr(buf, '\0', n) != NULL) {
        OPENSSL_cleanse(buf, RSV_ADMIN_TOKEN_MAX + 1);
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "the admin token must be %d to %d bytes without NUL (it has %zu): make one "
                    "with `openssl rand -hex 32`",
                    RSV_ADMIN_TOKEN_MIN, RSV_ADMIN_TOKEN_MAX, n);
        return -1;
    }
    buf[n] = '\0';
    return 0;
}

bool
rsv_admin_token_equal(const char *given, size_t given_len, const char *want)
{
    unsigned char a[32], b[32];
    unsigned int la = 0, lb = 0;
    bool ok = EVP_Digest(given, given_len, a, &la, EVP_sha256(), NULL) == 1 &&
              EVP_Digest(want, strlen(want), b, &lb, EVP_sha256(), NULL) == 1 && la == lb;

    return ok && CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

/* Hex of HMAC-SHA256(key, msg[0..len)) into hex (MAC_HEX + 1 bytes). */
static bool
mac_hex(const rsv_admission_key_t *k, const char *msg, size_t len, char *hex)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;

    if (HMAC(EVP_sha256(), k->key, (int)k->len, (const unsigned char *)msg, len, mac, &mac_len) ==
            NULL ||
        mac_len * 2 != MAC_HEX) {
        return false;
    }
    for (unsigned int i = 0; i < mac_len; i++) {
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    }
    return true;
}

/* 1..RSV_ADMISSION_TICKET_MAX lowercase hex digits, the whole of s[0..len). */
static bool
is_ticket(const char *s, size_t len)
{
    return len >= 1 && len <= RSV_ADMISSION_TICKET_MAX && strspn(s, "0123456789abcdef") >= len;
}

int
rsv_admission_sign(const rsv_admission_key_t *k, int64_t user_id, int64_t schedule_id,
                   const char *ticket, int64_t expires_at_ms, char *out, size_t out_len)
{
    char hex[MAC_HEX + 1];
    int n;

    if (ticket == NULL || !is_ticket(ticket, strlen(ticket))) {
        return -1;
    }
    n = snprintf(out, out_len, PREFIX "%" PRId64 ".%" PRId64 ".%s.%" PRId64 ".", user_id,
                 schedule_id, ticket, expires_at_ms);
    if (n < 0 || (size_t)n + MAC_HEX + 1 > out_len || !mac_hex(k, out, (size_t)n, hex)) {
        return -1;
    }
    memcpy(out + n, hex, MAC_HEX + 1);
    return 0;
}

/* A non-negative decimal without sign or leading zero, ending at '.'; advances *p past it. */
static bool
take_number(const char **p, int64_t *v)
{
    const char *s = *p;
    int64_t x = 0;

    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) {
        return false;
    }
    for (; *s >= '0' && *s <= '9'; s++) {
        if (x > (INT64_MAX - (*s - '0')) / 10) {
            return false;
        }
        x = x * 10 + (*s - '0');
    }
    if (*s != '.') {
        return false;
    }
    *v = x;
    *p = s + 1;
    return true;
}

/*
 * Splits a token into user, schedule, ticket (copied into ticket) and
 * expiry, and where its MAC starts; false when it is not spelled exactly as
 * we sign.
 */
static bool
parse(const char *token, int64_t v[3], char *ticket, const char **mac)
{
    const char *p = token + strlen(PREFIX), *dot;

    if (strlen(token) >= RSV_ADMISSION_TOKEN_MAX || strncmp(token, PREFIX, strlen(PREFIX)) != 0 ||
        !take_number(&p, &v[0]) || !take_number(&p, &v[1]) || (dot = strchr(p, '.')) == NULL ||
        !is_ticket(p, (size_t)(dot - p))) {
        return false;
    }
    memcpy(ticket, p, (size_t)(dot - p));
    ticket[dot - p] = '\0';
    p = dot + 1;
    if (!take_number(&p, &v[2])) {
        return false;
    }
    *mac = p;
    return strlen(p) == MAC_HEX && strspn(p, "0123456789abcdef") == MAC_HEX;
}

int
rsv_admission_verify(const rsv_admission_key_t *k, const char *token, int64_t user_id,
                     int64_t schedule_id, int64_t now_ms, rsv_admission_t *out, svc_err_t *err)
{
    int64_t v[3] = {0, 0, 0}; /* user, schedule, expiry */
    char ticket[RSV_ADMISSION_TICKET_MAX + 1];
    const char *mac = NULL, *why = NULL;
    char want[MAC_HEX + 1];

    if (token == NULL || token[0] == '\0') {
        why = "no admission token; enter the waiting room first";
    } else if (!parse(token, v, ticket, &mac)) {
        why = "malformed admission token";
    } else if (!mac_hex(k, token, (size_t)(mac - token), want) ||
               CRYPTO_memcmp(want, mac, MAC_HEX) != 0) {
        why = "admission token not signed by this service";
    } else if (v[0] != user_id) {
        why = "admission token of another user";
    } else if (v[1] != schedule_id) {
        why = "admission token of another schedule";
    } else if (v[2] <= now_ms) {
        why = "admission expired; enter the waiting room again";
    }
    if (why != NULL) {
        svc_err_set(err, SVC_FAILED_PRECONDITION, "not admitted to schedule %" PRId64 ": %s",
                    schedule_id, why);
        return -1;
    }
    if (out != NULL) {
        memcpy(out->ticket, ticket, sizeof(out->ticket));
        out->expires_at_ms = v[2];
    }
    return 0;
}

/* ---------- room tickets ---------- */

#define ROOM_MAC_HEX 32 /* 128 bits of the MAC are plenty for a ticket */

/* The MAC of "room-ticket:<body>" (body: "<schedule>.<user>.<ticket>."), first ROOM_MAC_HEX. */
static bool
room_mac(const rsv_admission_key_t *k, const char *body, size_t len, char *hex)
{
    char msg[RSV_ROOM_TICKET_MAX + 16];
    char full[MAC_HEX + 1];
    int n = snprintf(msg, sizeof(msg), "room-ticket:%.*s", (int)len, body);

    if (n < 0 || (size_t)n >= sizeof(msg) || !mac_hex(k, msg, (size_t)n, full)) {
        return false;
    }
    memcpy(hex, full, ROOM_MAC_HEX);
    hex[ROOM_MAC_HEX] = '\0';
    return true;
}

int
rsv_room_ticket_sign(const rsv_admission_key_t *k, int64_t schedule_id, int64_t user_id,
                     int64_t seq, const char *ticket, char *out, size_t out_len)
{
    char hex[ROOM_MAC_HEX + 1];
    int n;

    if (ticket == NULL || !is_ticket(ticket, strlen(ticket)) || seq < 0) {
        return -1;
    }
    n = snprintf(out, out_len, "%" PRId64 ".%" PRId64 ".%" PRId64 ".%s.", schedule_id, user_id, seq,
                 ticket);
    if (n < 0 || (size_t)n + ROOM_MAC_HEX + 1 > out_len || !room_mac(k, out, (size_t)n, hex)) {
        return -1;
    }
    memcpy(out + n, hex, ROOM_MAC_HEX + 1);
    return 0;
}

int
rsv_room_ticket_parse(const rsv_admission_key_t *k, const char *s, int64_t *schedule_id,
                      int64_t *user_id, int64_t *seq, char *ticket, svc_err_t *err)
{
    const char *p = s, *dot;
    char want[ROOM_MAC_HEX + 1];

    if (s == NULL || strlen(s) >= RSV_ROOM_TICKET_MAX || !take_number(&p, schedule_id) ||
        !take_number(&p, user_id) || !take_number(&p, seq) || (dot = strchr(p, '.')) == NULL ||
        !is_ticket(p, (size_t)(dot - p)) || strlen(dot + 1) != ROOM_MAC_HEX ||
        !room_mac(k, s, (size_t)(dot + 1 - s), want) ||
        CRYPTO_memcmp(want, dot + 1, ROOM_MAC_HEX) != 0 || *schedule_id < 1 || *user_id < 1) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "ticket: not a waiting-room ticket");
        return -1;
    }
    memcpy(ticket, p, (size_t)(dot - p));
    ticket[dot - p] = '\0';
    return 0;
}
