/*
 * wire.h: a look at a request's bytes before protobuf-c unpacks them.
 * protobuf-c hands a string field over as a C string, so a NUL byte inside
 * one ("key\0junk") would silently cut it short, and two different strings
 * would read as one. The server refuses such a message instead.
 */
#ifndef SVC_WIRE_H
#define SVC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/*
 * False when a string field of desc, or of a message inside it (at most 32
 * deep), holds a NUL byte in data[0..len); true otherwise, also for bytes
 * that are not a message at all (protobuf_c_message_unpack refuses those).
 * Pure; never reads outside data.
 */
bool svc_wire_strings_have_no_nul(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                                  size_t len);

#endif
