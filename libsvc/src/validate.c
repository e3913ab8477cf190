/*
 * validate.c: the argument checks handlers run before touching a store, each
 * returning false with an INVALID_ARGUMENT message that names the field.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "svc/err.h"
#include "svc/validate.h"

static bool
key_char_ok(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return c == ':' || c == '_' || c == '.' || c == '/' || c == '-';
}

bool
svc_validate_key(const char *field, const char *key, svc_err_t *err)
{
    size_t len = key == NULL ? 0 : strnlen(key, SVC_KEY_MAX + 1);
    bool ok = len >= 1 && len <= SVC_KEY_MAX;

    for (size_t i = 0; ok && i < len; i++)
        ok = key_char_ok((unsigned char)key[i]);
    if (!ok)
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "%s must be 1 to %d characters of A-Z a-z 0-9 : _ . / -", field, SVC_KEY_MAX);
    return ok;
}

bool
svc_validate_range(const char *field, int64_t value, int64_t min, int64_t max, svc_err_t *err)
{
    if (value >= min && value <= max)
        return true;
    svc_err_set(err, SVC_INVALID_ARGUMENT, "%s must be between %lld and %lld", field,
                (long long)min, (long long)max);
    return false;
}

/*
 * Length of the well-formed UTF-8 sequence at s[0..len), or 0 when it is not
 * one: a stray continuation byte, a truncated sequence, an overlong form, a
 * surrogate (U+D800..U+DFFF) or a code point above U+10FFFF (RFC 3629).
 */
static size_t
utf8_seq_len(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong below U+0800 */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
    }
    if (len < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

bool
svc_validate_text(const char *field, const char *text, size_t min_len, size_t max_len,
                  svc_err_t *err)
{
    /* max_len + 1 would wrap for SIZE_MAX; strnlen with SIZE_MAX is plain strlen then. */
    size_t probe = max_len == SIZE_MAX ? SIZE_MAX : max_len + 1;
    size_t len = text == NULL ? 0 : strnlen(text, probe);
    const unsigned char *s = (const unsigned char *)text;

    if (len < min_len || len > max_len) {
        if (min_len == max_len)
            svc_err_set(err, SVC_INVALID_ARGUMENT, "%s must be %zu bytes", field, max_len);
        else if (min_len == 0)
            svc_err_set(err, SVC_INVALID_ARGUMENT, "%s must be at most %zu bytes", field, max_len);
        else
            svc_err_set(err, SVC_INVALID_ARGUMENT, "%s must be %zu to %zu bytes", field, min_len,
                        max_len);
        return false;
    }
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(s + i, len - i);
        if (n == 0) {
            svc_err_set(err, SVC_INVALID_ARGUMENT, "%s must be valid UTF-8", field);
            return false;
        }
        i += n;
    }
    return true;
}
