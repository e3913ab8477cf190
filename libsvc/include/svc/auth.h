/*
 * auth.h: caller identity (DESIGN.md §6). Verifies a call's bearer JWT
 * against one configured public key (RS256 for an RSA key, ES256 for a P-256
 * key: the key fixes the algorithm, whatever the token's header says) with
 * OpenSSL, and tells a handler whether the call may act for a user: its
 * token's sub is that user, or its peer presented a verified client
 * certificate whose name is trusted.
 *
 * Identity is on when AUTH_JWT_KEY_FILE or AUTH_TRUSTED_PEERS is set. Off,
 * every check answers OK and the services behave as they did without it.
 */
#ifndef SVC_AUTH_H
#define SVC_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "svc/err.h"
#include "svc/server.h"

/* Longest sub kept (bytes, with the NUL); a longer one is an invalid token. */
#define SVC_AUTH_SUB_MAX 128
/* Longest token looked at (bytes); a longer one is an invalid token. */
#define SVC_AUTH_TOKEN_MAX 8192
/* Most names AUTH_TRUSTED_PEERS may list. */
#define SVC_AUTH_PEERS_MAX 16

typedef struct svc_auth svc_auth_t;

typedef struct {
    const char *jwt_key_file;  /* PEM public key: RSA of 2048+ bits or EC P-256; NULL/"": none */
    const char *issuer;        /* iss must equal it; NULL/"": not checked */
    const char *audience;      /* aud (a string or an array) must name it; NULL/"": not checked */
    int64_t leeway_s;          /* clock skew allowed on exp and nbf, seconds */
    const char *trusted_peers; /* comma-separated certificate names; NULL/"": none */
} svc_auth_opts_t;

/*
 * The settings, as svc_opt_t initializers for a service's table; o is a
 * svc_auth_opts_t *. SVC_OPT_AUTH_PEERS alone is for a service that names no
 * user (lock-svc).
 */
/* clang-format off */
#define SVC_OPT_AUTH_PEERS(o)                                                                      \
    {"auth-trusted-peers", "AUTH_TRUSTED_PEERS", SVC_OPT_STRING, "",                               \
     "comma-separated client-certificate names (CN or DNS SAN) of trusted peers, which may act "   \
     "for any user and use reserved lock names; needs TLS client verification",                    \
     0, 0, &(o)->trusted_peers, 0}
#define SVC_OPTS_AUTH(o)                                                                           \
    {"auth-jwt-key-file", "AUTH_JWT_KEY_FILE", SVC_OPT_STRING, "",                                 \
     "PEM public key (RSA 2048+ bits: RS256, EC P-256: ES256) that verifies callers' bearer "      \
     "JWTs; set: every call naming a user needs one whose sub is that user",                       \
     0, 0, &(o)->jwt_key_file, 0},                                                                 \
    {"auth-jwt-issuer", "AUTH_JWT_ISSUER", SVC_OPT_STRING, "",                                     \
     "the iss a JWT must carry (empty: not checked)", 0, 0, &(o)->issuer, 0},                      \
    {"auth-jwt-audience", "AUTH_JWT_AUDIENCE", SVC_OPT_STRING, "",                                 \
     "the aud a JWT must name (empty: not checked)", 0, 0, &(o)->audience, 0},                     \
    {"auth-jwt-leeway-s", "AUTH_JWT_LEEWAY_S", SVC_OPT_INT, "30",                                  \
     "clock skew allowed on a JWT's exp and nbf, seconds", 0, 300, &(o)->leeway_s, 0},             \
    SVC_OPT_AUTH_PEERS(o)
/* clang-format on */

/*
 * Loads the key and the peer list. Returns NULL with err set (naming the
 * setting) when the key file cannot be read or holds no usable public key,
 * or the peer list is malformed; a service then exits 2. With neither a key
 * nor peers it returns an object with identity off.
 */
svc_auth_t *svc_auth_create(const svc_auth_opts_t *opts, svc_err_t *err);
/*
 * The usual main() step, after svc_log_init and before any thread starts:
 * svc_auth_create, or one line "prog: ..." on stderr and exit 2. Logs
 * whether identity is on, with which algorithm and how many trusted peers.
 */
svc_auth_t *svc_auth_create_or_exit(const svc_auth_opts_t *opts, const char *prog);
/* NULL is a no-op. */
void svc_auth_destroy(svc_auth_t *auth);
/* True when identity is on. NULL: false. */
bool svc_auth_on(const svc_auth_t *auth);
/* "RS256", "ES256", or NULL without a key. */
const char *svc_auth_alg(const svc_auth_t *auth);

/*
 * Verifies a compact JWS token (header.payload.signature): the header's alg
 * is the key's, the signature verifies, exp is present and now_s is before
 * exp + leeway, nbf (when present) is at most now_s + leeway, iss and aud
 * match when configured, sub is a non-empty string. A pure function of its
 * arguments: safe from any thread, no logging. Returns 0 and copies sub, or
 * -1 with err UNAUTHENTICATED and a short reason (the token is not echoed).
 * REQUIRES: auth has a key (svc_auth_alg != NULL).
 */
int svc_auth_verify(const svc_auth_t *auth, const char *token, int64_t now_s,
                    char sub[SVC_AUTH_SUB_MAX], svc_err_t *err);

/* Who a call acts as. */
typedef struct {
    bool any_user;   /* identity off, or a trusted peer */
    bool peer;       /* a trusted peer (by its certificate name) */
    int64_t user_id; /* the token's sub as a user id; -1 when it is not one */
} svc_auth_caller_t;

/*
 * Works out who the call acts as: anyone when identity is off (auth may be
 * NULL), any user for a trusted peer, else the user of its verified bearer
 * token ("authorization: Bearer <JWT>"). Returns 0, or -1 with err
 * UNAUTHENTICATED when the token is missing or invalid.
 */
int svc_auth_caller(const svc_auth_t *auth, svc_call_t *call, svc_auth_caller_t *out,
                    svc_err_t *err);
/* True when the caller may act for user_id. */
bool svc_auth_caller_may(const svc_auth_caller_t *caller, int64_t user_id);

/*
 * svc_auth_caller, then svc_auth_caller_may: 0 when the call may act for
 * user_id; -1 with err UNAUTHENTICATED (no valid token) or PERMISSION_DENIED
 * (the token is someone else's).
 */
int svc_auth_check_user(const svc_auth_t *auth, svc_call_t *call, int64_t user_id, svc_err_t *err);

/*
 * For what only services may do (lock-svc's reserved names): 0 when
 * identity is off or the call comes from a trusted peer, else -1 with err
 * PERMISSION_DENIED "<what> is reserved for trusted peers".
 */
int svc_auth_check_peer(const svc_auth_t *auth, svc_call_t *call, const char *what, svc_err_t *err);

#endif
