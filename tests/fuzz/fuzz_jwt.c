/*
 * fuzz_jwt.c: the bearer-token verifier (svc_auth_verify), with an ES256 key
 * made at start and iss/aud configured. Two halves per input:
 *
 *   - the input as a token, as a caller would send it: it must be refused
 *     with UNAUTHENTICATED (nobody can forge the key's signature; `none`,
 *     HS256 and every other trick included);
 *   - the input split into a header and claims that the key itself signs:
 *     what a trusted issuer could send. The verifier parses those claims; an
 *     accepted one must have a non-empty sub that fits, and must carry this
 *     iss and aud.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "svc/auth.h"
#include "testjwt.h"

#define NOW 1800000000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static svc_auth_t *auth;
static EVP_PKEY *key;

static void
setup(void)
{
    char path[] = "/tmp/fuzz-jwt-XXXXXX";
    svc_auth_opts_t o = {.issuer = "issuer", .audience = "tickets", .leeway_s = 30};
    svc_err_t err;
    int fd = mkstemp(path);

    key = testjwt_ec_key("prime256v1");
    if (fd < 0 || key == NULL || testjwt_write_public(key, path) != 0) {
        fprintf(stderr, "fuzz_jwt: cannot make a key\n");
        abort();
    }
    close(fd);
    o.jwt_key_file = path;
    auth = svc_auth_create(&o, &err);
    unlink(path);
    if (auth == NULL) {
        fprintf(stderr, "fuzz_jwt: %s\n", err.msg);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char sub[SVC_AUTH_SUB_MAX];
    svc_err_t err = {0};
    char *text, *split, *token;

    if (auth == NULL) {
        setup();
    }
    text = fuzz_strndup(data, size);

    /* As sent by a caller: never accepted. */
    FUZZ_CHECK(svc_auth_verify(auth, text, NOW, sub, &err) != 0);
    fuzz_check_refusal(&err, SVC_UNAUTHENTICATED);

    /* As signed by the issuer: header, then claims after the first newline. */
    split = strchr(text, '\n');
    if (split != NULL) {
        *split = '\0';
        token = testjwt_sign("ES256", key, NULL, 0, text, split + 1);
        if (token != NULL) {
            memset(&err, 0, sizeof(err));
            if (svc_auth_verify(auth, token, NOW, sub, &err) == 0) {
                FUZZ_CHECK(sub[0] != '\0' && strlen(sub) < SVC_AUTH_SUB_MAX);
                FUZZ_CHECK(strstr(split + 1, "issuer") != NULL);
                FUZZ_CHECK(strstr(split + 1, "tickets") != NULL);
            } else {
                fuzz_check_refusal(&err, SVC_UNAUTHENTICATED);
            }
            free(token);
        }
    }
    free(text);
    return 0;
}
