/* test_descset.c: the FileDescriptorSet index behind server reflection. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "descset.h"

extern const unsigned char svctest_descriptor_set[];
extern const size_t svctest_descriptor_set_len;

static void
test_index(void **state)
{
    svc_err_t err;
    svc_descset_t *set =
        svc_descset_parse(svctest_descriptor_set, svctest_descriptor_set_len, &err);
    int i;

    (void)state;
    assert_non_null(set);
    assert_int_equal(svc_descset_count(set), 4);
    i = svc_descset_find_file(set, "svctest/v1/svctest.proto");
    assert_true(i >= 0);
    assert_int_equal(svc_descset_find_symbol(set, "svctest.v1.TestService"), i);
    assert_int_equal(svc_descset_find_symbol(set, ".svctest.v1.EchoRequest"), i);
    assert_int_equal(svc_descset_find_symbol(set, "svctest.v1.TestService.Slow"), i);
    assert_int_equal(
        svc_descset_find_symbol(set, "grpc.health.v1.HealthCheckResponse.ServingStatus"),
        svc_descset_find_file(set, "grpc/health/v1/health.proto"));
    assert_int_equal(svc_descset_find_symbol(set, "svctest.v1.Nope"), -1);
    assert_int_equal(svc_descset_find_symbol(set, "svctest.v1"), -1);

    const uint8_t *data;
    size_t len;
    svc_descset_bytes(set, i, &data, &len);
    assert_true(len > 100);
    assert_true(data >= svctest_descriptor_set &&
                data + len <= svctest_descriptor_set + svctest_descriptor_set_len);

    int out[8];
    assert_int_equal(svc_descset_closure(set, i, out, 8), 1); /* svctest imports nothing */
    assert_int_equal(out[0], i);
    svc_descset_free(set);
}

static void
test_imports_closure(void **state)
{
    /* Hand-made set: a.proto imports b.proto, which imports c.proto. */
    static const uint8_t set_bytes[] = {
        0x0a, 0x12, 0x0a, 0x07, 'a',  '.',  'p',  'r',  'o',  't',  'o',  0x1a, 0x07,
        'b',  '.',  'p',  'r',  'o',  't',  'o',  0x0a, 0x12, 0x0a, 0x07, 'b',  '.',
        'p',  'r',  'o',  't',  'o',  0x1a, 0x07, 'c',  '.',  'p',  'r',  'o',  't',
        'o',  0x0a, 0x13, 0x0a, 0x07, 'c',  '.',  'p',  'r',  'o',  't',  'o',  0x12,
        0x01, 'p',  0x22, 0x05, 0x0a, 0x03, 'M',  's',  'g'};
    svc_err_t err;
    svc_descset_t *set = svc_descset_parse(set_bytes, sizeof(set_bytes), &err);
    int out[8];

    (void)state;
    assert_non_null(set);
    assert_int_equal(svc_descset_closure(set, 0, out, 8), 3);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 2);
    assert_int_equal(svc_descset_find_symbol(set, "p.Msg"), 2);
    svc_descset_free(set);
}

static void
test_malformed(void **state)
{
    static const uint8_t truncated[] = {0x0a, 0x40, 0x0a, 0x01};
    static const uint8_t bad_varint[] = {0x0a, 0xff, 0xff, 0xff};
    static const uint8_t nameless[] = {0x0a, 0x02, 0x12, 0x00};
    svc_err_t err;

    (void)state;
    assert_null(svc_descset_parse(truncated, sizeof(truncated), &err));
    assert_int_equal(err.code, SVC_INVALID_ARGUMENT);
    assert_null(svc_descset_parse(bad_varint, sizeof(bad_varint), &err));
    assert_null(svc_descset_parse(nameless, sizeof(nameless), &err));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_index),
        cmocka_unit_test(test_imports_closure),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
