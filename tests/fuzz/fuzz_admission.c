/*
 * fuzz_admission.c: reservation-svc's waiting-room tokens
 * (reservation_admission.h): the admission-token verifier, the
 * waiting-room ticket parser and the admin-token comparison. The first
 * byte picks one of:
 *
 *   0  a token from the input, verified for a user and schedule from the
 *      input: refused with FAILED_PRECONDITION, or accepted only when it
 *      is exactly the token the service signs for what it says;
 *   1  a token the service signs for fields from the input, verified
 *      (accepted while unexpired), then one byte of it changed: refused;
 *   2, 3  the same for waiting-room tickets (refusal: INVALID_ARGUMENT);
 *   4  the admin-token comparison: equal exactly when the bytes are;
 *   5  a key of any length: 32..256 bytes, else INVALID_ARGUMENT.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_keys.h"
#include "reservation_admission.h"

static rsv_admission_key_t key;

/* A lock-svc ticket from the input: up to RSV_ADMISSION_TICKET_MAX + 1 bytes, NUL-terminated. */
static void
take_ticket(const uint8_t **p, size_t *left, char *out)
{
    uint8_t n = 0;

    fuzz_take(p, left, &n, 1);
    n %= RSV_ADMISSION_TICKET_MAX + 2;
    fuzz_take(p, left, out, n);
    out[n] = '\0';
}

static void
verify_given(const uint8_t *p, size_t left)
{
    int64_t user = fuzz_take_i64(&p, &left), schedule = fuzz_take_i64(&p, &left);
    char *token = fuzz_strndup(p, left), again[RSV_ADMISSION_TOKEN_MAX];
    rsv_admission_t adm;
    svc_err_t err = {0};

    if (rsv_admission_verify(&key, token, user, schedule, FUZZ_NOW_MS, &adm, &err) != 0) {
        fuzz_check_refusal(&err, SVC_FAILED_PRECONDITION);
    } else {
        FUZZ_CHECK(adm.expires_at_ms > FUZZ_NOW_MS);
        FUZZ_CHECK(rsv_admission_sign(&key, user, schedule, adm.ticket, adm.expires_at_ms, again,
                                      sizeof(again)) == 0);
        FUZZ_CHECK(strcmp(again, token) == 0);
    }
    free(token);
}

static void
sign_and_tamper(const uint8_t *p, size_t left)
{
    int64_t user = fuzz_take_i64(&p, &left), schedule = fuzz_take_i64(&p, &left);
    int64_t expires = fuzz_take_i64(&p, &left);
    char ticket[RSV_ADMISSION_TICKET_MAX + 2], token[RSV_ADMISSION_TOKEN_MAX];
    uint8_t at[2] = {0, 0};
    rsv_admission_t adm;
    svc_err_t err = {0};
    size_t len;

    take_ticket(&p, &left, ticket);
    fuzz_take(&p, &left, at, sizeof(at));
    /* The handlers sign only ids >= 1 and a future expiry. */
    if (user < 1 || schedule < 1 || expires <= FUZZ_NOW_MS ||
        rsv_admission_sign(&key, user, schedule, ticket, expires, token, sizeof(token)) != 0) {
        return;
    }
    FUZZ_CHECK(strlen(token) < RSV_ADMISSION_TOKEN_MAX);
    FUZZ_CHECK(rsv_admission_verify(&key, token, user, schedule, FUZZ_NOW_MS, &adm, &err) == 0);
    FUZZ_CHECK(strcmp(adm.ticket, ticket) == 0 && adm.expires_at_ms == expires);
    /* Another user's, another schedule's, and later on an expired one. */
    FUZZ_CHECK(rsv_admission_verify(&key, token, user + (user < INT64_MAX ? 1 : -1), schedule,
                                    FUZZ_NOW_MS, NULL, &err) != 0);
    FUZZ_CHECK(rsv_admission_verify(&key, token, user, schedule ^ 1, FUZZ_NOW_MS, NULL, &err) != 0);
    FUZZ_CHECK(rsv_admission_verify(&key, token, user, schedule, expires, NULL, &err) != 0);
    /* A forgery: any one byte changed. */
    len = strlen(token);
    token[at[0] % len] ^= at[1] != 0 ? at[1] : 1;
    FUZZ_CHECK(rsv_admission_verify(&key, token, user, schedule, FUZZ_NOW_MS, NULL, &err) != 0);
    fuzz_check_refusal(&err, SVC_FAILED_PRECONDITION);
}

static void
parse_given_ticket(const uint8_t *p, size_t left)
{
    char *ticket = fuzz_strndup(p, left), lock_ticket[RSV_ADMISSION_TICKET_MAX + 1],
         again[RSV_ROOM_TICKET_MAX];
    int64_t schedule, user, seq;
    svc_err_t err = {0};

    if (rsv_room_ticket_parse(&key, ticket, &schedule, &user, &seq, lock_ticket, &err) != 0) {
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
    } else {
        FUZZ_CHECK(schedule >= 1 && user >= 1 && seq >= 0);
        FUZZ_CHECK(rsv_room_ticket_sign(&key, schedule, user, seq, lock_ticket, again,
                                        sizeof(again)) == 0);
        FUZZ_CHECK(strcmp(again, ticket) == 0);
    }
    free(ticket);
}

static void
sign_and_tamper_ticket(const uint8_t *p, size_t left)
{
    int64_t schedule = fuzz_take_i64(&p, &left), user = fuzz_take_i64(&p, &left);
    int64_t seq = fuzz_take_i64(&p, &left), s2, u2, q2;
    char lock_ticket[RSV_ADMISSION_TICKET_MAX + 2], back[RSV_ADMISSION_TICKET_MAX + 1],
        ticket[RSV_ROOM_TICKET_MAX];
    uint8_t at[2] = {0, 0};
    svc_err_t err = {0};
    size_t len;

    take_ticket(&p, &left, lock_ticket);
    fuzz_take(&p, &left, at, sizeof(at));
    if (schedule < 1 || user < 1 ||
        rsv_room_ticket_sign(&key, schedule, user, seq, lock_ticket, ticket, sizeof(ticket)) != 0) {
        return;
    }
    FUZZ_CHECK(seq >= 0);
    FUZZ_CHECK(rsv_room_ticket_parse(&key, ticket, &s2, &u2, &q2, back, &err) == 0);
    FUZZ_CHECK(s2 == schedule && u2 == user && q2 == seq && strcmp(back, lock_ticket) == 0);
    len = strlen(ticket);
    ticket[at[0] % len] ^= at[1] != 0 ? at[1] : 1;
    FUZZ_CHECK(rsv_room_ticket_parse(&key, ticket, &s2, &u2, &q2, back, &err) != 0);
    fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
}

static void
admin_token(const uint8_t *p, size_t left)
{
    static const char want[] = FUZZ_ADMIN_TOKEN;
    bool same = left == strlen(want) && memcmp(p, want, left) == 0;

    FUZZ_CHECK(rsv_admin_token_equal((const char *)p, left, want) == same);
}

static void
key_of_any_length(const uint8_t *p, size_t left)
{
    rsv_admission_key_t k;
    svc_err_t err = {0};

    if (rsv_admission_key_set(&k, p, left, &err) == 0) {
        FUZZ_CHECK(left >= RSV_ADMISSION_KEY_MIN && left <= RSV_ADMISSION_KEY_MAX);
        FUZZ_CHECK(k.len == left && memcmp(k.key, p, left) == 0);
    } else {
        FUZZ_CHECK(left < RSV_ADMISSION_KEY_MIN || left > RSV_ADMISSION_KEY_MAX);
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    svc_err_t err;

    (void)argc;
    (void)argv;
    FUZZ_CHECK(rsv_admission_key_set(&key, FUZZ_ADMISSION_KEY, strlen(FUZZ_ADMISSION_KEY), &err) ==
               0);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] % 6) {
    case 0:
        verify_given(data + 1, size - 1);
        break;
    case 1:
        sign_and_tamper(data + 1, size - 1);
        break;
    case 2:
        parse_given_ticket(data + 1, size - 1);
        break;
    case 3:
        sign_and_tamper_ticket(data + 1, size - 1);
        break;
    case 4:
        admin_token(data + 1, size - 1);
        break;
    default:
        key_of_any_length(data + 1, size - 1);
        break;
    }
    return 0;
}
