/*
 * descset.h: a read-only index over a serialized FileDescriptorSet: which file
 * defines which symbol, and which files each file imports. Server reflection
 * answers from it with the files' original bytes.
 */
#ifndef SVC_DESCSET_H
#define SVC_DESCSET_H

#include <stddef.h>
#include <stdint.h>

#include "svc/err.h"

typedef struct svc_descset svc_descset_t;

/* Indexes data (which must outlive the set). NULL with err set when malformed. */
svc_descset_t *svc_descset_parse(const uint8_t *data, size_t len, svc_err_t *err);
void svc_descset_free(svc_descset_t *set);

int svc_descset_count(const svc_descset_t *set);
const char *svc_descset_name(const svc_descset_t *set, int i);
/* The serialized FileDescriptorProto of file i. */
void svc_descset_bytes(const svc_descset_t *set, int i, const uint8_t **data, size_t *len);
/* Index of the file called name, or -1. */
int svc_descset_find_file(const svc_descset_t *set, const char *name);
/*
 * Index of the file defining a fully-qualified symbol (a message, nested
 * message, enum, service or "Service.Method"; a leading dot is ignored), or -1.
 */
int svc_descset_find_symbol(const svc_descset_t *set, const char *symbol);
/*
 * Writes file i, then every file it imports directly or not, each once, into
 * out (at most cap). Returns how many were written.
 */
int svc_descset_closure(const svc_descset_t *set, int i, int *out, int cap);

#endif
