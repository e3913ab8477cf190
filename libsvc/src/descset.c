/*
 * descset.c: a small protobuf wire-format reader for FileDescriptorSet. It
 * reads only names, packages, imports and the symbols a file defines, which is
 * all reflection needs; everything else is skipped by wire type.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "descset.h"

typedef struct {
    const uint8_t *p, *end;
} wire_t;

typedef struct {
    const uint8_t *data;
    size_t len;
    char *name;
    char *package;
    char **deps;
    int n_deps;
    char **symbols;
    int n_symbols;
} desc_file_t;

struct svc_descset {
    desc_file_t *files;
    int n_files;
};

static bool
wire_varint(wire_t *w, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64; shift += 7) {
        if (w->p >= w->end) {
            return false;
        }
        uint8_t b = *w->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

/*
 * Reads the next field. For length-delimited fields sub is the payload.
 * Returns false at the end or on malformed input (*bad tells which).
 */
static bool
wire_next(wire_t *w, uint32_t *field, wire_t *sub, bool *bad)
{
    uint64_t key, v;

    *bad = false;
    if (w->p >= w->end) {
        return false;
    }
    if (!wire_varint(w, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX) {
        goto fail;
    }
    *field = (uint32_t)(key >> 3);
    sub->p = sub->end = NULL;
    switch (key & 7) {
    case 0:
        if (!wire_varint(w, &v)) {
            goto fail;
        }
        return true;
    case 1:
        if (w->end - w->p < 8) {
            goto fail;
        }
        w->p += 8;
        return true;
    case 5:
        if (w->end - w->p < 4) {
            goto fail;
        }
        w->p += 4;
        return true;
    case 2:
        if (!wire_varint(w, &v) || v > (uint64_t)(w->end - w->p)) {
            goto fail;
        }
        sub->p = w->p;
        sub->end = w->p + v;
        w->p += v;
        *field |= 0x80000000u; /* mark: has payload */
        return true;
    default:
        goto fail;
    }
fail:
    *bad = true;
    return false;
}

static char *
wire_string(const wire_t *sub)
{
    return strndup((const char *)sub->p, (size_t)(sub->end - sub->p));
}

static int
push_str(char ***arr, int *n, char *s)
{
    char **grown;

    if (s == NULL || (grown = realloc(*arr, (size_t)(*n + 1) * sizeof(*grown))) == NULL) {
        free(s);
        return -1;
    }
    *arr = grown;
    grown[(*n)++] = s;
    return 0;
}

static char *
join(const char *scope, const wire_t *name)
{
    char *out = NULL;
    int len = (int)(name->end - name->p);

    if (scope[0] == '\0') {
        return strndup((const char *)name->p, (size_t)len);
    }
    if (asprintf(&out, "%s.%.*s", scope, len, (const char *)name->p) < 0) {
        return NULL;
    }
    return out;
}

/* Finds field 1 (name) of a message. */
static bool
find_name(wire_t msg, wire_t *name)
{
    uint32_t field;
    wire_t sub;
    bool bad;

    while (wire_next(&msg, &field, &sub, &bad)) {
        if (field == (1u | 0x80000000u)) {
            *name = sub;
            return true;
        }
    }
    return false;
}

/*
 * Adds the symbol a DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto
 * defines, and for messages and services what is nested inside.
 * kind: 'm' message, 'e' enum, 's' service.
 */
static int
add_symbols(desc_file_t *f, const char *scope, wire_t msg, char kind)
{
    wire_t name, sub;
    uint32_t field;
    bool bad;
    char *full;

    if (!find_name(msg, &name)) {
        return -1;
    }
    full = join(scope, &name);
    if (full == NULL || push_str(&f->symbols, &f->n_symbols, full) != 0) {
        return -1;
    }
    while (kind != 'e' && wire_next(&msg, &field, &sub, &bad)) {
        uint32_t num = field & 0x7fffffffu;
        if (!(field & 0x80000000u)) {
            continue;
        }
        if (kind == 'm' && num == 3 && add_symbols(f, full, sub, 'm') != 0) {
            return -1;
        }
        if (kind == 'm' && num == 4 && add_symbols(f, full, sub, 'e') != 0) {
            return -1;
        }
        if (kind == 's' && num == 2) {
            wire_t mname;
            char *m;
            if (!find_name(sub, &mname) || (m = join(full, &mname)) == NULL ||
                push_str(&f->symbols, &f->n_symbols, m) != 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int
parse_file(desc_file_t *f, wire_t file)
{
    wire_t w = file, sub;
    uint32_t field;
    bool bad;

    f->data = file.p;
    f->len = (size_t)(file.end - file.p);
    while (wire_next(&w, &field, &sub, &bad)) {
        if (field == (1u | 0x80000000u)) {
            free(f->name);
            f->name = wire_string(&sub);
        } else if (field == (2u | 0x80000000u)) {
            free(f->package);
            f->package = wire_string(&sub);
        } else if (field == (3u | 0x80000000u)) {
            if (push_str(&f->deps, &f->n_deps, wire_string(&sub)) != 0) {
                return -1;
            }
        }
    }
    if (bad || f->name == NULL) {
        return -1;
    }
    /* Second pass: symbols need the package, which may come after them. */
    w = file;
    while (wire_next(&w, &field, &sub, &bad)) {
        const char *scope = f->package != NULL ? f->package : "";
        int rc = 0;
        if (field == (4u | 0x80000000u)) {
            rc = add_symbols(f, scope, sub, 'm');
        } else if (field == (5u | 0x80000000u)) {
            rc = add_symbols(f, scope, sub, 'e');
        } else if (field == (6u | 0x80000000u)) {
            rc = add_symbols(f, scope, sub, 's');
        }
        if (rc != 0) {
            return -1;
        }
    }
    return bad ? -1 : 0;
}

svc_descset_t *
svc_descset_parse(const uint8_t *data, size_t len, svc_err_t *err)
{
    svc_descset_t *set = calloc(1, sizeof(*set));
    wire_t w = {data, data + len}, sub;
    uint32_t field;
    bool bad = false;

    if (set == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    while (wire_next(&w, &field, &sub, &bad)) {
        if (field != (1u | 0x80000000u)) {
            continue;
        }
        desc_file_t *grown = realloc(set->files, (size_t)(set->n_files + 1) * sizeof(*grown));
        if (grown == NULL) {
            bad = true;
            break;
        }
        set->files = grown;
        memset(&set->files[set->n_files], 0, sizeof(*grown));
        set->n_files++;
        if (parse_file(&set->files[set->n_files - 1], sub) != 0) {
            bad = true;
            break;
        }
    }
    if (bad) {
        svc_descset_free(set);
        svc_err_set(err, SVC_INVALID_ARGUMENT, "malformed descriptor set");
        return NULL;
    }
    return set;
}

void
svc_descset_free(svc_descset_t *set)
{
    if (set == NULL) {
        return;
    }
    for (int i = 0; i < set->n_files; i++) {
        desc_file_t *f = &set->files[i];
        for (int j = 0; j < f->n_deps; j++) {
            free(f->deps[j]);
        }
        for (int j = 0; j < f->n_symbols; j++) {
            free(f->symbols[j]);
        }
        free(f->deps);
        free(f->symbols);
        free(f->name);
        free(f->package);
    }
    free(set->files);
    free(set);
}

int
svc_descset_count(const svc_descset_t *set)
{
    return set->n_files;
}

const char *
svc_descset_name(const svc_descset_t *set, int i)
{
    return set->files[i].name;
}

void
svc_descset_bytes(const svc_descset_t *set, int i, const uint8_t **data, size_t *len)
{
    *data = set->files[i].data;
    *len = set->files[i].len;
}

int
svc_descset_find_file(const svc_descset_t *set, const char *name)
{
    for (int i = 0; i < set->n_files; i++) {
        if (strcmp(set->files[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

int
svc_descset_find_symbol(const svc_descset_t *set, const char *symbol)
{
    if (symbol[0] == '.') {
        symbol++;
    }
    for (int i = 0; i < set->n_files; i++) {
        for (int j = 0; j < set->files[i].n_symbols; j++) {
            if (strcmp(set->files[i].symbols[j], symbol) == 0) {
                return i;
            }
        }
    }
    return -1;
}

int
svc_descset_closure(const svc_descset_t *set, int i, int *out, int cap)
{
    int n = 0;

    if (i < 0 || i >= set->n_files || cap <= 0) {
        return 0;
    }
    out[n++] = i;
    /* out doubles as the work list: walk it, appending imports not seen yet. */
    for (int k = 0; k < n; k++) {
        const desc_file_t *f = &set->files[out[k]];
        for (int d = 0; d < f->n_deps; d++) {
            int j = svc_descset_find_file(set, f->deps[d]);
            bool seen = j < 0;
            for (int m = 0; m < n && !seen; m++) {
                seen = out[m] == j;
            }
            if (!seen && n < cap) {
                out[n++] = j;
            }
        }
    }
    return n;
}
