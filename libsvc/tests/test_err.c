/*
 * test_err.c: status names, the gRPC mapping both ways, and svc_err_set/clear.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "svc/err.h"

static void
test_status_names(void **state)
{
    (void)state;
    assert_string_equal(svc_status_name(SVC_OK), "OK");
    assert_string_equal(svc_status_name(SVC_CANCELLED), "CANCELLED");
    assert_string_equal(svc_status_name(SVC_INVALID_ARGUMENT), "INVALID_ARGUMENT");
    assert_string_equal(svc_status_name(SVC_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(svc_status_name(SVC_NOT_FOUND), "NOT_FOUND");
    assert_string_equal(svc_status_name(SVC_ALREADY_EXISTS), "ALREADY_EXISTS");
    assert_string_equal(svc_status_name(SVC_PERMISSION_DENIED), "PERMISSION_DENIED");
    assert_string_equal(svc_status_name(SVC_RESOURCE_EXHAUSTED), "RESOURCE_EXHAUSTED");
    assert_string_equal(svc_status_name(SVC_FAILED_PRECONDITION), "FAILED_PRECONDITION");
    assert_string_equal(svc_status_name(SVC_ABORTED), "ABORTED");
    assert_string_equal(svc_status_name(SVC_OUT_OF_RANGE), "OUT_OF_RANGE");
    assert_string_equal(svc_status_name(SVC_UNIMPLEMENTED), "UNIMPLEMENTED");
    assert_string_equal(svc_status_name(SVC_INTERNAL), "INTERNAL");
    assert_string_equal(svc_status_name(SVC_UNAVAILABLE), "UNAVAILABLE");
    assert_string_equal(svc_status_name(SVC_DATA_LOSS), "DATA_LOSS");
    assert_string_equal(svc_status_name(SVC_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(svc_status_name((svc_status_t)17), "UNKNOWN");
    assert_string_equal(svc_status_name((svc_status_t)-1), "UNKNOWN");
}

static void
test_grpc_round_trip(void **state)
{
    (void)state;
    /* grpc_status_code values from grpc/status.h */
    assert_int_equal(svc_status_to_grpc(SVC_OK), 0);
    assert_int_equal(svc_status_to_grpc(SVC_INVALID_ARGUMENT), 3);
    assert_int_equal(svc_status_to_grpc(SVC_NOT_FOUND), 5);
    assert_int_equal(svc_status_to_grpc(SVC_FAILED_PRECONDITION), 9);
    assert_int_equal(svc_status_to_grpc(SVC_UNAVAILABLE), 14);
    assert_int_equal(svc_status_to_grpc(SVC_UNAUTHENTICATED), 16);
    for (int c = 0; c <= 16; c++) {
        svc_status_t s = svc_status_from_grpc(c);
        assert_int_equal((int)s, c);
        assert_int_equal(svc_status_to_grpc(s), c);
    }
}

static void
test_grpc_out_of_range(void **state)
{
    (void)state;
    assert_int_equal(svc_status_to_grpc((svc_status_t)17), 13);
    assert_int_equal(svc_status_to_grpc((svc_status_t)-3), 13);
    assert_int_equal(svc_status_to_grpc((svc_status_t)1000), 13);
    assert_int_equal(svc_status_from_grpc(17), SVC_UNKNOWN);
    assert_int_equal(svc_status_from_grpc(-1), SVC_UNKNOWN);
    assert_int_equal(svc_status_from_grpc(1 << 30), SVC_UNKNOWN);
}

static void
test_err_set_and_clear(void **state)
{
    svc_err_t err;

    (void)state;
    svc_err_clear(&err);
    assert_true(svc_err_ok(&err));
    assert_string_equal(err.msg, "");

    svc_err_set(&err, SVC_NOT_FOUND, "lock %s not found (%d)", "a:b", 7);
    assert_false(svc_err_ok(&err));
    assert_int_equal(err.code, SVC_NOT_FOUND);
    assert_string_equal(err.msg, "lock a:b not found (7)");

    svc_err_clear(&err);
    assert_int_equal(err.code, SVC_OK);
    assert_string_equal(err.msg, "");

    /* NULL is allowed: lower layers may not care about the detail. */
    svc_err_set(NULL, SVC_INTERNAL, "ignored %d", 1);
    svc_err_clear(NULL);
}

static void
test_err_truncates(void **state)
{
    char big[1000];
    svc_err_t err;

    (void)state;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    svc_err_set(&err, SVC_INTERNAL, "%s", big);
    assert_int_equal(err.code, SVC_INTERNAL);
    assert_int_equal(strlen(err.msg), SVC_ERR_MSG_MAX - 1);
    assert_int_equal(err.msg[0], 'x');
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),      cmocka_unit_test(test_grpc_round_trip),
        cmocka_unit_test(test_grpc_out_of_range), cmocka_unit_test(test_err_set_and_clear),
        cmocka_unit_test(test_err_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
