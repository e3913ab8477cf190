/*
 * fuzz_redis_url.c: lock-svc's REDIS_URL parser (redis://[:password@]host:port[/db]
 * and redis-sentinel://host:port[,host:port...]/master), run as lock-svc
 * runs it (lock_store_create, which reads the URL and connects to nothing),
 * and the redaction lock-svc logs the URL with. A URL is accepted, or
 * refused with INVALID_ARGUMENT naming REDIS_URL; the logged form of an
 * accepted URL never shows the password the parser took from it, whatever
 * the buffer's size.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "lock_redis.h"
#include "lock_store.h"

/*
 * The password lock_store takes from an accepted redis:// URL: between the
 * first ':' and the first '@' after the scheme (NULL: none).
 */
static char *
password_of(const char *url)
{
    const char *rest = url + strlen("redis://"), *at = strchr(rest, '@'), *colon;

    if (strncmp(url, "redis://", 8) != 0 || at == NULL ||
        (colon = memchr(rest, ':', (size_t)(at - rest))) == NULL || colon + 1 == at) {
        return NULL;
    }
    return strndup(colon + 1, (size_t)(at - colon - 1));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url, shown[512], small[24];
    lock_store_t *store;
    svc_err_t err;
    size_t cap;

    if (size < 1) {
        return 0;
    }
    cap = 1 + data[0] % sizeof(small); /* the redaction's buffer: 1..sizeof(small) bytes */
    url = fuzz_strndup(data + 1, size - 1);

    store = lock_store_create(url, 1, &err);
    if (store == NULL) {
        fuzz_check_refusal(&err, SVC_INVALID_ARGUMENT);
        FUZZ_CHECK(strstr(err.msg, "REDIS_URL") != NULL);
    }
    lock_store_destroy(store);

    FUZZ_CHECK(lock_redis_url_redact(url, shown, sizeof(shown)) == shown);
    FUZZ_CHECK(memchr(shown, '\0', sizeof(shown)) != NULL);
    memset(small, 'x', sizeof(small));
    lock_redis_url_redact(url, small, cap);
    FUZZ_CHECK(memchr(small, '\0', cap) != NULL);
    if (store != NULL && strlen(url) < sizeof(shown)) {
        char *password = password_of(url);
        if (password != NULL) {
            /* Where the password stood, the log shows "***". */
            FUZZ_CHECK(strstr(shown, "***@") != NULL);
            FUZZ_CHECK(strncmp(shown, url, strlen("redis://")) == 0);
            free(password);
        }
    }
    free(url);
    return 0;
}
