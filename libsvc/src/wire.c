/*
 * wire.c: finds a NUL byte inside a string field of a serialized message
 * (see wire.h), reading the wire format with the message's descriptor.
 */
#include "wire.h"

#include <string.h>

#define MAX_DEPTH 32

/* A varint at *p (before end); false when it is cut short or longer than 10 bytes. */
static bool
take_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 70 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        v |= shift < 64 ? (uint64_t)(b & 0x7f) << shift : 0;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool
clean(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end, int depth)
{
    while (p < end) {
        const ProtobufCFieldDescriptor *f;
        uint64_t key, n;

        if (!take_varint(&p, end, &key)) {
            return true; /* not a message: unpack refuses it */
        }
        switch (key & 7) {
        case 0:
            if (!take_varint(&p, end, &n)) {
                return true;
            }
            break;
        case 1:
            if (end - p < 8) {
                return true;
            }
            p += 8;
            break;
        case 5:
            if (end - p < 4) {
                return true;
            }
            p += 4;
            break;
        case 2:
            if (!take_varint(&p, end, &n) || n > (uint64_t)(end - p)) {
                return true;
            }
            f = key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3))
                    : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, '\0', n) != NULL) {
                return false;
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < MAX_DEPTH &&
                !clean(f->descriptor, p, p + n, depth + 1)) {
                return false;
            }
            p += n;
            break;
        default:
            return true; /* groups (not in proto3) or junk: unpack decides */
        }
    }
    return true;
}

bool
svc_wire_strings_have_no_nul(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                             size_t len)
{
    return len == 0 || clean(desc, data, data + len, 0);
}
