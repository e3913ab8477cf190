/*
 * validate.h: argument checks shared by the handlers. Each returns true when
 * the value is good; otherwise it sets err to INVALID_ARGUMENT with a message
 * that names the field ("key must be 1..200 characters of [A-Za-z0-9:_./-]").
 */
#ifndef SVC_VALIDATE_H
#define SVC_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "svc/err.h"

#define SVC_KEY_MAX 200

/* A lock key: 1..SVC_KEY_MAX bytes of [A-Za-z0-9:_./-]. key may be NULL (invalid). */
bool svc_validate_key(const char *field, const char *key, svc_err_t *err);

/* min <= value <= max. */
bool svc_validate_range(const char *field, int64_t value, int64_t min, int64_t max, svc_err_t *err);

/* A string of min_len..max_len bytes (NULL counts as empty), valid UTF-8, no NUL. */
bool svc_validate_text(const char *field, const char *text, size_t min_len, size_t max_len,
                       svc_err_t *err);

#endif
