/*
 * health.c: grpc.health.v1.Health, Check and Watch, for every server. Watch
 * streams are parked calls: no thread waits; a change writes to each of them.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "server_internal.h"

typedef struct health_entry {
    char *service;
    int status; /* Grpc__Health__V1__HealthCheckResponse__ServingStatus */
} health_entry_t;

typedef struct health_watcher {
    struct health_watcher *next;
    svc_call_t *call;
    char *service;
    int last_sent;
} health_watcher_t;

struct svc_health {
    pthread_mutex_t mu;
    health_entry_t *entries;
    int n_entries;
    health_watcher_t *watchers;
    bool shut;
};

#define STATUS_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN
#define STATUS_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define STATUS_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

svc_health_t *
svc__health_create(void)
{
    svc_health_t *h = calloc(1, sizeof(*h));

    if (h != NULL) {
        pthread_mutex_init(&h->mu, NULL);
    }
    return h;
}

void
svc__health_destroy(svc_health_t *h)
{
    if (h == NULL) {
        return;
    }
    for (int i = 0; i < h->n_entries; i++) {
        free(h->entries[i].service);
    }
    free(h->entries);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Caller holds mu. */
static int
health__lookup(svc_health_t *h, const char *service)
{
    for (int i = 0; i < h->n_entries; i++) {
        if (strcmp(h->entries[i].service, service) == 0) {
            return h->entries[i].status;
        }
    }
    return STATUS_UNKNOWN;
}

/* Caller holds mu. Sends w its service's status if it changed since the last message. */
static void
health__notify(svc_health_t *h, health_watcher_t *w)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    int status = health__lookup(h, w->service);

    if (status == w->last_sent) {
        return;
    }
    w->last_sent = status;
    resp.status = status;
    (void)svc_call_write(w->call, &resp.base);
}

void
svc__health_set(svc_health_t *h, const char *service, bool serving)
{
    int status = serving ? STATUS_SERVING : STATUS_NOT_SERVING;
    int i;

    pthread_mutex_lock(&h->mu);
    if (h->shut) {
        status = STATUS_NOT_SERVING;
    }
    for (i = 0; i < h->n_entries; i++) {
        if (strcmp(h->entries[i].service, service) == 0) {
            break;
        }
    }
    if (i == h->n_entries) {
        health_entry_t *grown = realloc(h->entries, (size_t)(i + 1) * sizeof(*grown));
        char *name = strdup(service);
        if (grown == NULL || name == NULL) {
            if (grown != NULL) {
                h->entries = grown;
            }
            free(name);
            pthread_mutex_unlock(&h->mu);
            return;
        }
        h->entries = grown;
        h->entries[i].service = name;
        h->n_entries++;
    }
    h->entries[i].status = status;
    for (health_watcher_t *w = h->watchers; w != NULL; w = w->next) {
        health__notify(h, w);
    }
    pthread_mutex_unlock(&h->mu);
}

void
svc__health_shutdown(svc_health_t *h)
{
    health_watcher_t *w;

    pthread_mutex_lock(&h->mu);
    h->shut = true;
    for (int i = 0; i < h->n_entries; i++) {
        h->entries[i].status = STATUS_NOT_SERVING;
    }
    while ((w = h->watchers) != NULL) {
        h->watchers = w->next;
        health__notify(h, w);
        svc_call_finish(w->call, NULL);
        free(w->service);
        free(w);
    }
    pthread_mutex_unlock(&h->mu);
}

static void
health__check(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    svc_health_t *h = user;
    svc_err_t err;
    int status;

    pthread_mutex_lock(&h->mu);
    status = health__lookup(h, req->service != NULL ? req->service : "");
    pthread_mutex_unlock(&h->mu);
    if (status == STATUS_UNKNOWN) {
        svc_err_set(&err, SVC_NOT_FOUND, "unknown service %.200s", req->service);
        svc_call_fail(call, &err);
        return;
    }
    resp.status = status;
    svc_call_reply(call, &resp.base);
}

/* The watcher is looked up by call: its memory may be gone if shutdown ended it first. */
static void
health__watch_cancelled(svc_call_t *call, void *arg)
{
    svc_health_t *h = arg;
    health_watcher_t **pp, *w = NULL;

    pthread_mutex_lock(&h->mu);
    for (pp = &h->watchers; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->call == call) {
            w = *pp;
            *pp = w->next;
            break;
        }
    }
    if (w != NULL) {
        svc_err_t err;
        svc_err_set(&err, SVC_CANCELLED, "watch cancelled");
        svc_call_fail(call, &err);
        free(w->service);
        free(w);
    }
    pthread_mutex_unlock(&h->mu);
}

static void
health__watch(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    const Grpc__Health__V1__HealthCheckRequest *req = (const void *)msg;
    svc_health_t *h = user;
    health_watcher_t *w = calloc(1, sizeof(*w));
    svc_err_t err;

    if (w == NULL || (w->service = strdup(req->service != NULL ? req->service : "")) == NULL) {
        free(w);
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        svc_call_fail(call, &err);
        return;
    }
    w->call = call;
    w->last_sent = -1;
    pthread_mutex_lock(&h->mu);
    if (h->shut) {
        pthread_mutex_unlock(&h->mu);
        free(w->service);
        free(w);
        svc_err_set(&err, SVC_UNAVAILABLE, "server is shutting down");
        svc_call_fail(call, &err);
        return;
    }
    w->next = h->watchers;
    h->watchers = w;
    health__notify(h, w);
    /* Under mu, so that shutdown cannot end the call before the callback is set. */
    svc_call_on_cancel(call, health__watch_cancelled, h);
    pthread_mutex_unlock(&h->mu);
}

int
svc__health_register(svc_server_t *server, svc_health_t *health, svc_err_t *err)
{
    static const svc_handler_t handlers[] = {
        {"Check", SVC_METHOD_UNARY, health__check, NULL, 1},
        {"Watch", SVC_METHOD_SERVER_STREAM, health__watch, NULL, 1},
    };

    return svc_server_add_service(server, &grpc__health__v1__health__descriptor, handlers,
                                  sizeof(handlers) / sizeof(handlers[0]), health, err);
}
