/*
 * fuzz_common.c: see fuzz_common.h.
 */
#define _GNU_SOURCE
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/arena.h"
#include "wire.h"

void
fuzz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", what, file, line);
    abort();
}

/* pack(msg) into a new malloc'd buffer; *len gets its size. */
static uint8_t *
pack(const ProtobufCMessage *msg, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n > 0 ? n : 1);

    FUZZ_CHECK(buf != NULL);
    *len = protobuf_c_message_pack(msg, buf);
    FUZZ_CHECK(*len == n);
    return buf;
}

/* Whether msg or a message inside it kept an unknown field of number 0. */
static bool
has_field_zero(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;

    for (unsigned i = 0; i < msg->n_unknown_fields; i++) {
        if (msg->unknown_fields[i].tag == 0) {
            return true;
        }
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *at = (const char *)msg + f->offset;
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)msg + f->quantifier_offset);
            ProtobufCMessage *const *sub = *(ProtobufCMessage *const *const *)at;
            for (size_t k = 0; k < n; k++) {
                if (has_field_zero(sub[k])) {
                    return true;
                }
            }
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)at;
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t which = *(const uint32_t *)((const char *)msg + f->quantifier_offset);
                if (which != f->id) {
                    continue;
                }
            }
            if (sub != NULL && has_field_zero(sub)) {
                return true;
            }
        }
    }
    return false;
}

ProtobufCMessage *
fuzz_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len)
{
    /* As the server: a call's arena (which starts small) and its allocator. */
    svc_arena_t *arena = svc_arena_create_sized(1024);
    ProtobufCMessage *in_arena, *msg, *again;
    uint8_t *b1, *b2;
    size_t n1, n2;

    FUZZ_CHECK(arena != NULL);
    if (!svc_wire_strings_have_no_nul(desc, data, len)) {
        svc_arena_destroy(arena); /* the server refuses it before unpacking */
        return NULL;
    }
    in_arena = protobuf_c_message_unpack(desc, svc_arena_allocator(arena), len, data);
    msg = protobuf_c_message_unpack(desc, NULL, len, data);
    FUZZ_CHECK((in_arena == NULL) == (msg == NULL));
    if (msg == NULL) {
        svc_arena_destroy(arena);
        return NULL;
    }
    FUZZ_CHECK(protobuf_c_message_check(msg));
    /* The arena's copy packs to the same bytes as malloc's; C strings never pack a NUL. */
    b1 = pack(msg, &n1);
    FUZZ_CHECK(svc_wire_strings_have_no_nul(desc, b1, n1));
    b2 = pack(in_arena, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b2);
    svc_arena_destroy(arena);
    /*
     * What we would send back decodes to itself. But protobuf-c keeps an
     * unknown field of number 0 (spelled as an overlong tag, "80 00"), packs
     * it as tag 0 and then refuses that: its own quirk, and harmless here
     * (no service packs a request again).
     */
    again = protobuf_c_message_unpack(desc, NULL, n1, b1);
    if (again == NULL) {
        FUZZ_CHECK(has_field_zero(msg));
        free(b1);
        return msg;
    }
    b2 = pack(again, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
    protobuf_c_message_free_unpacked(again, NULL);
    return msg;
}

void
fuzz_free(ProtobufCMessage *msg)
{
    if (msg != NULL) {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
}

void
fuzz_check_refusal(const svc_err_t *err, svc_status_t code)
{
    FUZZ_CHECK(err->code == code);
    FUZZ_CHECK(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
    FUZZ_CHECK(err->msg[0] != '\0');
}

void
fuzz_check_verdict(bool ok, const svc_err_t *err)
{
    if (!ok) {
        fuzz_check_refusal(err, SVC_INVALID_ARGUMENT);
    }
}

const ProtobufCMethodDescriptor *
fuzz_pick_method(const ProtobufCServiceDescriptor *service, uint8_t selector)
{
    return &service->methods[selector % service->n_methods];
}

char *
fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);

    FUZZ_CHECK(s != NULL);
    memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

void
fuzz_take(const uint8_t **data, size_t *len, void *out, size_t n)
{
    size_t k = *len < n ? *len : n;

    memset(out, 0, n);
    if (k > 0) {
        memcpy(out, *data, k);
    }
    *data += k;
    *len -= k;
}

int64_t
fuzz_take_i64(const uint8_t **data, size_t *len)
{
    int64_t v;

    fuzz_take(data, len, &v, sizeof(v));
    return v;
}

int
fuzz_requests(const ProtobufCServiceDescriptor *service, const uint8_t *data, size_t size,
              void (*run)(const char *method, const ProtobufCMessage *msg))
{
    const ProtobufCMethodDescriptor *m;
    ProtobufCMessage *msg;

    if (size < 1) {
        return 0;
    }
    m = fuzz_pick_method(service, data[0]);
    msg = fuzz_unpack(m->input, data + 1, size - 1);
    if (msg != NULL) {
        run(m->name, msg);
        fuzz_free(msg);
    }
    return 0;
}
