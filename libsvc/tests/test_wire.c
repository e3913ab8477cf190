/*
 * test_wire.c: svc_wire_strings_have_no_nul, the server's look for a NUL
 * byte inside a string field before protobuf-c makes it a C string (which
 * would cut "key\0junk" to "key").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "lock/v1/lock.pb-c.h"
#include "wire.h"

#define CLEAN(desc, bytes) svc_wire_strings_have_no_nul(&(desc), (bytes), sizeof(bytes))

static void
test_strings_without_nul_pass(void **state)
{
    /* GetLockRequest{key: "seat:1"}, and one with an unknown varint field 9 too. */
    static const uint8_t plain[] = {0x0a, 6, 's', 'e', 'a', 't', ':', '1'};
    static const uint8_t unknown[] = {0x0a, 1, 'k', 0x48, 0x05};
    static const uint8_t empty[] = {0x0a, 0};

    (void)state;
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, plain));
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, unknown));
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, empty));
    assert_true(svc_wire_strings_have_no_nul(&lock__v1__get_lock_request__descriptor, NULL, 0));
}

static void
test_nul_in_a_string_is_found(void **state)
{
    static const uint8_t key[] = {0x0a, 3, 'a', 0, 'b'};
    static const uint8_t trailing[] = {0x0a, 2, 'a', 0};
    /* AcquireRequest: lease_ms 5, then owner (field 2) "x\0". */
    static const uint8_t owner[] = {0x18, 5, 0x12, 2, 'x', 0};

    (void)state;
    assert_false(CLEAN(lock__v1__get_lock_request__descriptor, key));
    assert_false(CLEAN(lock__v1__get_lock_request__descriptor, trailing));
    assert_false(CLEAN(lock__v1__acquire_request__descriptor, owner));
}

static void
test_nul_in_a_nested_string_is_found(void **state)
{
    /* ServerReflectionRequest{file_containing_extension (5): {containing_type (1): "a\0"}}. */
    static const uint8_t nested[] = {0x2a, 4, 0x0a, 2, 'a', 0};
    static const uint8_t fine[] = {0x2a, 4, 0x0a, 2, 'a', 'b'};

    (void)state;
    assert_false(CLEAN(grpc__reflection__v1__server_reflection_request__descriptor, nested));
    assert_true(CLEAN(grpc__reflection__v1__server_reflection_request__descriptor, fine));
}

static void
test_not_a_message_is_left_to_unpack(void **state)
{
    /* Cut short, a length past the end, a group: unpack refuses these itself. */
    static const uint8_t cut[] = {0x0a, 9, 'a', 0};
    static const uint8_t varint[] = {0x08, 0xff, 0xff};
    static const uint8_t group[] = {0x0b, 0x0a, 1, 0};

    (void)state;
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, cut));
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, varint));
    assert_true(CLEAN(lock__v1__get_lock_request__descriptor, group));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings_without_nul_pass),
        cmocka_unit_test(test_nul_in_a_string_is_found),
        cmocka_unit_test(test_nul_in_a_nested_string_is_found),
        cmocka_unit_test(test_not_a_message_is_left_to_unpack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
