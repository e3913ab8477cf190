/*
 * fuzz_keys.h: the admission key and clock the reservation targets use, so
 * that the seeds (tests/fuzz/gen_corpus.c) can carry tokens and tickets
 * that verify.
 */
#ifndef FUZZ_KEYS_H
#define FUZZ_KEYS_H

#define FUZZ_ADMISSION_KEY "fuzz-admission-key-0123456789abcdef"
#define FUZZ_NOW_MS 1700000000000LL /* 2023-11-14 */
#define FUZZ_ADMIN_TOKEN "fuzz-admin-token-0123456789abcdef"

#endif
