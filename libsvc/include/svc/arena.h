/*
 * arena.h: per-call memory. Everything a call allocates (unpacked request,
 * response, strings) comes from its arena and goes away with it in one free.
 */
#ifndef SVC_ARENA_H
#define SVC_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef struct svc_arena svc_arena_t;

/* Returns NULL when out of memory. */
svc_arena_t *svc_arena_create(void);
/*
 * With a first block of first_block bytes (at least 256) in the arena's own
 * malloc; later blocks double from there. For arenas that live in great
 * numbers at once and mostly stay small, such as a unary call's.
 */
svc_arena_t *svc_arena_create_sized(size_t first_block);
/* NULL is a no-op. */
void svc_arena_destroy(svc_arena_t *arena);
/* Frees all but the first block and makes the arena empty again. */
void svc_arena_reset(svc_arena_t *arena);

/* 16-byte aligned, zeroed memory; NULL when out of memory. */
void *svc_arena_alloc(svc_arena_t *arena, size_t size);
char *svc_arena_strdup(svc_arena_t *arena, const char *s);
char *svc_arena_printf(svc_arena_t *arena, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Bytes handed out so far (for tests and metrics). */
size_t svc_arena_used(const svc_arena_t *arena);

/* An allocator for protobuf_c_message_unpack whose free is a no-op. */
ProtobufCAllocator *svc_arena_allocator(svc_arena_t *arena);

#endif
