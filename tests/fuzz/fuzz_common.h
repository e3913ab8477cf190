/*
 * fuzz_common.h: what the libFuzzer targets of tests/fuzz share: a check
 * that aborts (libFuzzer saves the input that broke it), and the request
 * decoder run as the server runs it.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "svc/err.h"

/* A property of the code under test: when it does not hold, the run stops with a report. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fuzz_fail(#cond, __FILE__, __LINE__);                                                  \
        }                                                                                          \
    } while (0)

void fuzz_fail(const char *what, const char *file, int line) __attribute__((noreturn));

/*
 * Decodes data as desc the way the server does (no NUL inside a string,
 * wire.h, then protobuf_c_message_unpack into a call arena), and again with malloc, which ASan
 * watches byte by byte; both must agree. A message that decoded must survive a pack/unpack round
 * trip unchanged. Returns the malloc'd message for the validator (free it with fuzz_free) or NULL
 * when the bytes are not a message.
 */
ProtobufCMessage *fuzz_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                              size_t len);
void fuzz_free(ProtobufCMessage *msg);

/* After a validator: true, or false with INVALID_ARGUMENT and a message. */
void fuzz_check_verdict(bool ok, const svc_err_t *err);
/* Every other refusal: false with code and a non-empty, terminated message. */
void fuzz_check_refusal(const svc_err_t *err, svc_status_t code);

/* The method of service chosen by the input's first byte. */
const ProtobufCMethodDescriptor *fuzz_pick_method(const ProtobufCServiceDescriptor *service,
                                                  uint8_t selector);

/*
 * A request target's input: the first byte picks one of service's methods,
 * the rest is decoded as the server decodes that method's request; run gets
 * what decoded (and nothing when it does not). Returns 0 for libFuzzer.
 */
int fuzz_requests(const ProtobufCServiceDescriptor *service, const uint8_t *data, size_t size,
                  void (*run)(const char *method, const ProtobufCMessage *msg));

/* A NUL-terminated copy of data[0..len) (malloc'd, for free). */
char *fuzz_strndup(const uint8_t *data, size_t len);

/* Takes n bytes off the front of (*data, *len), zero-filled when there are fewer. */
void fuzz_take(const uint8_t **data, size_t *len, void *out, size_t n);
int64_t fuzz_take_i64(const uint8_t **data, size_t *len);

#endif
