/*
 * fuzz_descset.c: server reflection's side of every service. The first
 * byte picks one of:
 *
 *   0  the rest as a FileDescriptorSet for libsvc's own wire reader
 *      (svc_descset_parse): refused with INVALID_ARGUMENT, or indexed so
 *      that every lookup stays inside it;
 *   1  the rest as a grpc.reflection.v1.ServerReflectionRequest (decoded
 *      as the server decodes it), looked up in lock-svc's real descriptor
 *      set as reflection.c does;
 *   2  the rest as a grpc.health.v1.HealthCheckRequest.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "descset.h"
#include "fuzz_common.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

extern const unsigned char lock_descriptor_set[];
extern const size_t lock_descriptor_set_len;

#define CLOSURE_MAX 64

static svc_descset_t *real;

/* The files of set: names, bytes inside data, lookups and import closures in range. */
static void
walk(const svc_descset_t *set, const uint8_t *data, size_t len)
{
    int n = svc_descset_count(set), out[CLOSURE_MAX];

    FUZZ_CHECK(n >= 0);
    for (int i = 0; i < n; i++) {
        const char *name = svc_descset_name(set, i);
        const uint8_t *bytes;
        size_t blen;
        int j, k;

        FUZZ_CHECK(name != NULL);
        j = svc_descset_find_file(set, name);
        FUZZ_CHECK(j >= 0 && j <= i && strcmp(svc_descset_name(set, j), name) == 0);
        svc_descset_bytes(set, i, &bytes, &blen);
        FUZZ_CHECK(data == NULL || (bytes >= data && bytes + blen <= data + len));
        k = svc_descset_closure(set, i, out, CLOSURE_MAX);
        FUZZ_CHECK(k >= 1 && k <= CLOSURE_MAX && out[0] == i);
        for (int m = 0; m < k; m++) {
            FUZZ_CHECK(out[m] >= 0 && out[m] < n);
        }
        (void)svc_descset_find_symbol(set, name);
    }
}

static void
as_set(const uint8_t *data, size_t len)
{
    svc_err_t err = {0};
    svc_descset_t *set = svc_descset_parse(data, len, &err);

    if (set == NULL) {
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
        return;
    }
    walk(set, data, len);
    svc_descset_free(set);
}

/* What reflection.c looks up for a request; the answer is an index of the set or -1. */
static void
lookup(const char *what, bool symbol)
{
    int i, n = svc_descset_count(real), out[CLOSURE_MAX];

    if (what == NULL) {
        return;
    }
    i = symbol ? svc_descset_find_symbol(real, what) : svc_descset_find_file(real, what);
    FUZZ_CHECK(i >= -1 && i < n);
    if (i >= 0) {
        FUZZ_CHECK(svc_descset_closure(real, i, out, CLOSURE_MAX) >= 1);
    }
}

static void
as_reflection(const uint8_t *data, size_t len)
{
    ProtobufCMessage *msg =
        fuzz_unpack(&grpc__reflection__v1__server_reflection_request__descriptor, data, len);
    const Grpc__Reflection__V1__ServerReflectionRequest *req = (const void *)msg;

    if (msg == NULL) {
        return;
    }
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        lookup(req->file_by_filename, false);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        lookup(req->file_containing_symbol, true);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        lookup(req->all_extension_numbers_of_type, true);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        if (req->file_containing_extension != NULL) {
            lookup(req->file_containing_extension->containing_type, true);
        }
        break;
    default:
        break;
    }
    fuzz_free(msg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    svc_err_t err;

    (void)argc;
    (void)argv;
    real = svc_descset_parse(lock_descriptor_set, lock_descriptor_set_len, &err);
    FUZZ_CHECK(real != NULL);
    walk(real, lock_descriptor_set, lock_descriptor_set_len);
    FUZZ_CHECK(svc_descset_find_symbol(real, "lock.v1.LockService.Acquire") >= 0);
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        as_set(data + 1, size - 1);
        break;
    case 1:
        as_reflection(data + 1, size - 1);
        break;
    default:
        fuzz_free(
            fuzz_unpack(&grpc__health__v1__health_check_request__descriptor, data + 1, size - 1));
        break;
    }
    return 0;
}
