/*
 * fuzz_page_token.c: balance-svc's page-token decoder
 * (balance_page_token_parse). Any text: accepted only when it is exactly
 * how ListTransactions writes a token ("%" PRId64 of a positive id), else
 * INVALID_ARGUMENT. And every token the service writes is accepted back as
 * the same id.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance_validate.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token = fuzz_strndup(data, size), written[32];
    const uint8_t *p = data;
    size_t left = size;
    int64_t before = -1, id;
    svc_err_t err = {0};

    if (balance_page_token_parse(token, &before, &err)) {
        if (token[0] == '\0') {
            FUZZ_CHECK(before == 0);
        } else {
            FUZZ_CHECK(before >= 1);
            snprintf(written, sizeof(written), "%" PRId64, before);
            FUZZ_CHECK(strcmp(written, token) == 0);
        }
    } else {
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
    }
    free(token);

    /* The service's own tokens: the id of a row (>= 1) in decimal. */
    id = fuzz_take_i64(&p, &left);
    if (id >= 1) {
        snprintf(written, sizeof(written), "%" PRId64, id);
        FUZZ_CHECK(balance_page_token_parse(written, &before, &err));
        FUZZ_CHECK(before == id);
    }
    return 0;
}
