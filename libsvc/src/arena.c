/*
 * arena.c: per-call bump allocator over a chain of blocks freed together;
 * protobuf-c unpacks into it through a ProtobufCAllocator whose free is a no-op.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "svc/arena.h"

#define ARENA_ALIGN 16
#define ARENA_FIRST_BLOCK ((size_t)4096)
#define ARENA_MIN_FIRST_BLOCK ((size_t)256)
/* Doubling block sizes stops here; a bigger request gets a block of its own size. */
#define ARENA_MAX_GROWTH ((size_t)1024 * 1024)

typedef struct arena_block {
    struct arena_block *next;
    unsigned char *data;
    size_t cap;
    size_t used;
} arena_block_t;

/* Not thread-safe: an arena belongs to one call, served by one thread at a time. */
struct svc_arena {
    ProtobufCAllocator pb;
    arena_block_t *head; /* block allocations come from; the list holds all blocks */
    arena_block_t first; /* its data follows this struct in the same malloc */
    size_t next_cap;     /* capacity of the next block when growing */
    size_t used;         /* bytes handed out since create or reset */
};

static void *
arena_pb_alloc(void *data, size_t size)
{
    return svc_arena_alloc(data, size);
}

static void
arena_pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr; /* the whole arena goes at once */
}

svc_arena_t *
svc_arena_create(void)
{
    return svc_arena_create_sized(ARENA_FIRST_BLOCK);
}

svc_arena_t *
svc_arena_create_sized(size_t first_block)
{
    svc_arena_t *a;

    if (first_block < ARENA_MIN_FIRST_BLOCK)
        first_block = ARENA_MIN_FIRST_BLOCK;
    if (first_block > ARENA_MAX_GROWTH)
        first_block = ARENA_MAX_GROWTH;
    a = malloc(sizeof(*a) + first_block);
    if (a == NULL)
        return NULL;
    a->pb.alloc = arena_pb_alloc;
    a->pb.free = arena_pb_free;
    a->pb.allocator_data = a;
    a->first.next = NULL;
    a->first.data = (unsigned char *)(a + 1);
    a->first.cap = first_block;
    a->first.used = 0;
    a->head = &a->first;
    a->next_cap = 2 * first_block;
    a->used = 0;
    return a;
}

static void
free_blocks_but_first(svc_arena_t *a)
{
    arena_block_t *b = a->head;

    while (b != NULL) {
        arena_block_t *next = b->next;
        if (b != &a->first)
            free(b);
        b = next;
    }
}

void
svc_arena_destroy(svc_arena_t *arena)
{
    if (arena == NULL)
        return;
    free_blocks_but_first(arena);
    free(arena);
}

void
svc_arena_reset(svc_arena_t *arena)
{
    if (arena == NULL)
        return;
    free_blocks_but_first(arena);
    arena->first.next = NULL;
    arena->first.used = 0;
    arena->head = &arena->first;
    arena->next_cap = 2 * arena->first.cap;
    arena->used = 0;
}

/* Offset in b where size bytes aligned to ARENA_ALIGN would start, or SIZE_MAX if they do not fit.
 */
static size_t
block_fit(const arena_block_t *b, size_t size)
{
    uintptr_t at = (uintptr_t)(b->data + b->used);
    size_t pad = (size_t)((ARENA_ALIGN - at % ARENA_ALIGN) % ARENA_ALIGN);

    if (pad > b->cap - b->used || size > b->cap - b->used - pad)
        return SIZE_MAX;
    return b->used + pad;
}

/*
 * Adds a block that can hold size bytes. A block made for one large request
 * goes behind the head so the free space left in the head stays usable.
 */
static arena_block_t *
arena_grow(svc_arena_t *a, size_t size)
{
    size_t cap = a->next_cap;
    arena_block_t *b;

    /* malloc refuses more than PTRDIFF_MAX; checking first also keeps the sums below exact */
    if (size > (size_t)PTRDIFF_MAX - sizeof(*b) - ARENA_ALIGN)
        return NULL;
    if (cap < size + ARENA_ALIGN)
        cap = size + ARENA_ALIGN; /* room for the worst alignment padding */
    b = malloc(sizeof(*b) + cap);
    if (b == NULL)
        return NULL;
    b->data = (unsigned char *)(b + 1);
    b->cap = cap;
    b->used = 0;
    if (cap > a->next_cap) {
        b->next = a->head->next;
        a->head->next = b;
    } else {
        b->next = a->head;
        a->head = b;
        if (a->next_cap < ARENA_MAX_GROWTH)
            a->next_cap *= 2;
    }
    return b;
}

void *
svc_arena_alloc(svc_arena_t *arena, size_t size)
{
    arena_block_t *b = arena->head;
    size_t off;
    void *p;

    if (size == 0)
        size = 1; /* distinct pointers, as malloc gives */
    off = block_fit(b, size);
    if (off == SIZE_MAX) {
        b = arena_grow(arena, size);
        if (b == NULL)
            return NULL;
        off = block_fit(b, size);
    }
    p = b->data + off;
    b->used = off + size;
    arena->used += size;
    memset(p, 0, size);
    return p;
}

char *
svc_arena_strdup(svc_arena_t *arena, const char *s)
{
    size_t n;
    char *p;

    if (s == NULL)
        return NULL;
    n = strlen(s);
    p = svc_arena_alloc(arena, n + 1);
    if (p != NULL)
        memcpy(p, s, n + 1);
    return p;
}

char *
svc_arena_printf(svc_arena_t *arena, const char *fmt, ...)
{
    va_list ap, ap2;
    int n;
    char *p;

    va_start(ap, fmt);
    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return NULL;
    }
    p = svc_arena_alloc(arena, (size_t)n + 1);
    if (p != NULL)
        vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

size_t
svc_arena_used(const svc_arena_t *arena)
{
    return arena->used;
}

ProtobufCAllocator *
svc_arena_allocator(svc_arena_t *arena)
{
    return &arena->pb;
}
