/*
 * test_arena.c: alignment, zeroing, growth, reset, the string helpers, and
 * protobuf-c unpacking through the arena's ProtobufCAllocator.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <protobuf-c/protobuf-c.h>

#include "svc/arena.h"

static int
setup(void **state)
{
    *state = svc_arena_create();
    return *state == NULL ? -1 : 0;
}

static int
teardown(void **state)
{
    svc_arena_destroy(*state);
    return 0;
}

static void
assert_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            fail_msg("byte %zu of %zu is %#x, not zero", i, n, p[i]);
}

static void
test_create_destroy(void **state)
{
    svc_arena_t *a = svc_arena_create();

    (void)state;
    assert_non_null(a);
    assert_int_equal(svc_arena_used(a), 0);
    svc_arena_destroy(a);
    svc_arena_destroy(NULL);
}

static void
test_aligned_zeroed_disjoint(void **state)
{
    svc_arena_t *a = *state;
    unsigned char *p[300];
    size_t used = 0;

    /* sizes 1..300 cross several blocks; each gets its own fill byte */
    for (size_t i = 0; i < 300; i++) {
        size_t size = i + 1;
        p[i] = svc_arena_alloc(a, size);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        assert_zero(p[i], size);
        memset(p[i], (int)(i % 251) + 1, size);
        used += size;
    }
    assert_int_equal(svc_arena_used(a), used);
    for (size_t i = 0; i < 300; i++)
        for (size_t j = 0; j <= i; j++)
            assert_int_equal(p[i][j], (int)(i % 251) + 1);
}

static void
test_many_small(void **state)
{
    svc_arena_t *a = *state;
    uint64_t *p[20000];

    for (size_t i = 0; i < 20000; i++) {
        p[i] = svc_arena_alloc(a, 24);
        assert_non_null(p[i]);
        p[i][0] = i;
        p[i][2] = ~(uint64_t)i;
    }
    assert_int_equal(svc_arena_used(a), 20000 * 24);
    for (size_t i = 0; i < 20000; i++) {
        assert_true(p[i][0] == i);
        assert_true(p[i][1] == 0);
        assert_true(p[i][2] == ~(uint64_t)i);
    }
}

static void
test_large(void **state)
{
    svc_arena_t *a = *state;
    unsigned char *small1 = svc_arena_alloc(a, 100);
    unsigned char *big = svc_arena_alloc(a, 3 * 1024 * 1024 + 7);
    unsigned char *small2 = svc_arena_alloc(a, 100);
    unsigned char *big2 = svc_arena_alloc(a, 5000);

    assert_non_null(small1);
    assert_non_null(big);
    assert_non_null(small2);
    assert_non_null(big2);
    assert_int_equal((uintptr_t)big % 16, 0);
    assert_zero(big, 3 * 1024 * 1024 + 7);
    /* ASan reports a write past any of these */
    memset(big, 0xAB, 3 * 1024 * 1024 + 7);
    memset(small1, 1, 100);
    memset(small2, 2, 100);
    memset(big2, 3, 5000);
    assert_int_equal(big[3 * 1024 * 1024 + 6], 0xAB);
    assert_int_equal(small1[99], 1);
    assert_int_equal(small2[0], 2);
    assert_int_equal(svc_arena_used(a), 100 + 3 * 1024 * 1024 + 7 + 100 + 5000);
}

static void
test_size_overflow(void **state)
{
    svc_arena_t *a = *state;

    assert_null(svc_arena_alloc(a, SIZE_MAX));
    assert_null(svc_arena_alloc(a, SIZE_MAX - 8));
    assert_null(svc_arena_alloc(a, SIZE_MAX - 64));
    assert_null(svc_arena_alloc(a, SIZE_MAX / 2 + 1));
    /* still usable */
    assert_int_equal(svc_arena_used(a), 0);
    assert_non_null(svc_arena_alloc(a, 16));
}

static void
test_zero_size(void **state)
{
    svc_arena_t *a = *state;
    void *p = svc_arena_alloc(a, 0), *q = svc_arena_alloc(a, 0);

    assert_non_null(p);
    assert_non_null(q);
    assert_ptr_not_equal(p, q);
}

static void
test_reset(void **state)
{
    svc_arena_t *a = *state;
    unsigned char *p, *q;

    p = svc_arena_alloc(a, 64);
    memset(p, 0xEE, 64);
    for (int i = 0; i < 100; i++)
        memset(svc_arena_alloc(a, 1000), 0xEE, 1000); /* several more blocks */
    assert_int_equal(svc_arena_used(a), 64 + 100 * 1000);

    svc_arena_reset(a);
    assert_int_equal(svc_arena_used(a), 0);
    /* the first block is reused, and what it hands out is zeroed again */
    q = svc_arena_alloc(a, 64);
    assert_ptr_equal(p, q);
    assert_zero(q, 64);
    for (int i = 0; i < 100; i++)
        assert_zero(svc_arena_alloc(a, 1000), 1000);
    assert_int_equal(svc_arena_used(a), 64 + 100 * 1000);
    svc_arena_reset(a);
    svc_arena_reset(a);
    assert_int_equal(svc_arena_used(a), 0);
}

/* A small first block (a unary call's): it grows past it, and a reset keeps only it. */
static void
test_sized(void **state)
{
    svc_arena_t *a = svc_arena_create_sized(1024), *tiny = svc_arena_create_sized(1);
    unsigned char *first, *p;

    (void)state;
    assert_non_null(a);
    assert_non_null(tiny);
    first = svc_arena_alloc(a, 1000); /* fits the first block */
    memset(first, 0xAB, 1000);
    p = svc_arena_alloc(a, 100); /* does not: a block of its own */
    assert_non_null(p);
    assert_true(p >= first + 1000 || p + 100 <= first);
    for (int i = 0; i < 50; i++)
        memset(svc_arena_alloc(a, 500), 0xCD, 500);
    assert_int_equal(svc_arena_used(a), 1000 + 100 + 50 * 500);
    svc_arena_reset(a);
    assert_ptr_equal(svc_arena_alloc(a, 1000), first);
    assert_zero(first, 1000);
    /* Below the least first block: still usable, growing as needed. */
    for (int i = 0; i < 20; i++)
        assert_zero(svc_arena_alloc(tiny, 300), 300);
    svc_arena_destroy(a);
    svc_arena_destroy(tiny);
}

static void
test_strdup_printf(void **state)
{
    svc_arena_t *a = *state;
    char *s = svc_arena_strdup(a, "lock:orders/1");
    char *e = svc_arena_strdup(a, "");
    char *f = svc_arena_printf(a, "%s-%05d-%c", "req", 42, 'z');
    char big[10000];
    char *g;

    assert_string_equal(s, "lock:orders/1");
    assert_string_equal(e, "");
    assert_string_equal(f, "req-00042-z");
    assert_null(svc_arena_strdup(a, NULL));

    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    g = svc_arena_printf(a, "<%s>", big);
    assert_non_null(g);
    assert_int_equal(strlen(g), sizeof(big) + 1);
    assert_int_equal(g[0], '<');
    assert_int_equal(g[sizeof(big)], '>');
    assert_string_equal(s, "lock:orders/1"); /* earlier strings untouched */
}

static void
test_allocator_interface(void **state)
{
    svc_arena_t *a = *state;
    ProtobufCAllocator *pa = svc_arena_allocator(a);
    unsigned char *p;

    assert_non_null(pa);
    assert_ptr_equal(svc_arena_allocator(a), pa);
    p = pa->alloc(pa->allocator_data, 40);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 16, 0);
    assert_zero(p, 40);
    assert_int_equal(svc_arena_used(a), 40);
    memset(p, 7, 40);
    pa->free(pa->allocator_data, p); /* a no-op: memory stays valid until the arena goes */
    assert_int_equal(p[39], 7);
    pa->free(pa->allocator_data, NULL);
}

/*
 * A hand-written descriptor for
 *   message Req { string key = 1; bytes data = 2; repeated string tags = 3; }
 * as protoc-c would generate it, so this test needs no generated code.
 */
typedef struct {
    ProtobufCMessage base;
    char *key;
    ProtobufCBinaryData data;
    size_t n_tags;
    char **tags;
} req_t;

static const ProtobufCMessageDescriptor req_descriptor;

static void
req_init(req_t *m)
{
    static const req_t init = {PROTOBUF_C_MESSAGE_INIT(&req_descriptor),
                               (char *)protobuf_c_empty_string,
                               {0, NULL},
                               0,
                               NULL};
    *m = init;
}

static void
req_init_any(ProtobufCMessage *m)
{
    req_init((req_t *)m);
}

static const ProtobufCFieldDescriptor req_fields[3] = {
    {"key", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_STRING, 0, offsetof(req_t, key), NULL,
     &protobuf_c_empty_string, 0, 0, NULL, NULL},
    {"data", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0, offsetof(req_t, data), NULL, NULL,
     0, 0, NULL, NULL},
    {"tags", 3, PROTOBUF_C_LABEL_REPEATED, PROTOBUF_C_TYPE_STRING, offsetof(req_t, n_tags),
     offsetof(req_t, tags), NULL, &protobuf_c_empty_string, 0, 0, NULL, NULL},
};
static const unsigned req_fields_by_name[] = {1, 0, 2};
static const ProtobufCIntRange req_ranges[2] = {{1, 0}, {0, 3}};
static const ProtobufCMessageDescriptor req_descriptor = {PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
                                                          "t.Req",
                                                          "Req",
                                                          "T__Req",
                                                          "t",
                                                          sizeof(req_t),
                                                          3,
                                                          req_fields,
                                                          req_fields_by_name,
                                                          1,
                                                          req_ranges,
                                                          req_init_any,
                                                          NULL,
                                                          NULL,
                                                          NULL};

static void
test_protobuf_unpack(void **state)
{
    svc_arena_t *a = *state;
    char *tags[] = {(char *)"a", (char *)"bb", (char *)"ccc"};
    req_t in, *out;
    uint8_t wire[256];
    size_t len;

    req_init(&in);
    in.key = (char *)"lock:orders/1";
    in.data.data = (uint8_t *)"\x00\x01\x02";
    in.data.len = 3;
    in.n_tags = 3;
    in.tags = tags;
    assert_true(protobuf_c_message_get_packed_size(&in.base) <= sizeof(wire));
    len = protobuf_c_message_pack(&in.base, wire);

    /* everything unpack allocates comes from the arena; LSan would see a leak otherwise */
    out = (req_t *)protobuf_c_message_unpack(&req_descriptor, svc_arena_allocator(a), len, wire);
    assert_non_null(out);
    assert_true(svc_arena_used(a) >= sizeof(req_t));
    assert_string_equal(out->key, "lock:orders/1");
    assert_int_equal(out->data.len, 3);
    assert_memory_equal(out->data.data, "\x00\x01\x02", 3);
    assert_int_equal(out->n_tags, 3);
    assert_string_equal(out->tags[2], "ccc");
    protobuf_c_message_free_unpacked(&out->base, svc_arena_allocator(a)); /* no-op */
    assert_string_equal(out->key, "lock:orders/1");

    /* a bad message fails cleanly too */
    assert_null(protobuf_c_message_unpack(&req_descriptor, svc_arena_allocator(a), 2,
                                          (const uint8_t *)"\x0a\x09"));
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_destroy),
        T(test_aligned_zeroed_disjoint),
        T(test_many_small),
        T(test_large),
        T(test_size_overflow),
        T(test_zero_size),
        T(test_reset),
        cmocka_unit_test(test_sized),
        T(test_strdup_printf),
        T(test_allocator_interface),
        T(test_protobuf_unpack),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
