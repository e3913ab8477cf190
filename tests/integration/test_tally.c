/*
 * test_tally.c: the suite's verdict on answers. Refusals are fine, faults
 * (UNKNOWN, INTERNAL, ...) and calls that outlive their deadline are not,
 * UNAVAILABLE is a fault where no fault was injected, and every violation is
 * counted.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "conformance.h"

static void
test_refusals_are_not_faults(void **state)
{
    cf_tally_t t;

    (void)state;
    memset(&t, 0, sizeof(t));
    cf_record(&t, SVC_OK, 5, 1000);
    cf_record(&t, SVC_UNAVAILABLE, 5, 1000);
    cf_record(&t, SVC_FAILED_PRECONDITION, 5, 1000);
    cf_record(&t, SVC_ABORTED, 5, 1000);
    cf_record(&t, SVC_DEADLINE_EXCEEDED, 1000, 1000); /* on time: a refusal */
    assert_int_equal(atomic_load(&t.requests), 5);
    assert_int_equal(atomic_load(&t.ok), 1);
    assert_int_equal(atomic_load(&t.by_code[SVC_UNAVAILABLE]), 1);
    assert_int_equal(cf_other_errors(&t), 0);
}

static void
test_faults_and_hangs(void **state)
{
    cf_tally_t t;

    (void)state;
    memset(&t, 0, sizeof(t));
    cf_record(&t, SVC_UNKNOWN, 5, 1000);
    cf_record(&t, SVC_INTERNAL, 5, 1000);
    cf_record(&t, SVC_INVALID_ARGUMENT, 5, 1000);
    assert_int_equal(cf_other_errors(&t), 3);
    /* An OK that came back long after its deadline is still a hang. */
    cf_record(&t, SVC_OK, 1000 + CF_HANG_SLACK_MS + 1, 1000);
    assert_int_equal(atomic_load(&t.hangs), 1);
    assert_int_equal(atomic_load(&t.ok), 0);
    assert_int_equal(cf_other_errors(&t), 4);
    assert_false(cf_is_refusal(SVC_OK));
    assert_false(cf_is_refusal(SVC_DATA_LOSS));
    assert_true(cf_is_refusal(SVC_RESOURCE_EXHAUSTED));
}

/* Invariant 6 of README.md's "One outcome only": without a fault nothing answers UNAVAILABLE. */
static void
test_unavailable_fails_only_a_fault_free_scenario(void **state)
{
    cf_tally_t t;

    (void)state;
    memset(&t, 0, sizeof(t));
    cf_record(&t, SVC_OK, 5, 1000);
    cf_record(&t, SVC_FAILED_PRECONDITION, 5, 1000);
    cf_record(&t, SVC_ABORTED, 5, 1000);
    assert_int_equal(cf_faults(&t, false), 0);
    cf_record(&t, SVC_UNAVAILABLE, 5, 1000);
    cf_record(&t, SVC_UNAVAILABLE, 5, 1000);
    assert_int_equal(cf_faults(&t, true), 0); /* a dependency was down: a refusal */
    assert_int_equal(cf_faults(&t, false), 2);
    assert_true(cf_is_refusal_in(SVC_UNAVAILABLE, true));
    assert_false(cf_is_refusal_in(SVC_UNAVAILABLE, false));
    assert_true(cf_is_refusal_in(SVC_ABORTED, false));
    /* UNKNOWN, INTERNAL and hangs fail either kind. */
    cf_record(&t, SVC_UNKNOWN, 5, 1000);
    cf_record(&t, SVC_INTERNAL, 5, 1000);
    cf_record(&t, SVC_OK, 1000 + CF_HANG_SLACK_MS + 1, 1000);
    assert_int_equal(cf_faults(&t, true), 3);
    assert_int_equal(cf_faults(&t, false), 5);
}

static void
test_violations_add_up(void **state)
{
    cf_tally_t t;

    (void)state;
    memset(&t, 0, sizeof(t));
    cf_add_check(&t, "clean", 0);
    assert_int_equal(atomic_load(&t.violations), 0);
    cf_add_check(&t, "two found", 2);
    cf_add_check(&t, "unreadable", -1); /* a check that cannot run is no pass */
    cf_violation(&t, "seat %d twice", 7);
    assert_int_equal(atomic_load(&t.violations), 4);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_are_not_faults),
        cmocka_unit_test(test_faults_and_hangs),
        cmocka_unit_test(test_unavailable_fails_only_a_fault_free_scenario),
        cmocka_unit_test(test_violations_add_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
