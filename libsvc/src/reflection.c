/*
 * reflection.c: grpc.reflection.v1 and v1alpha ServerReflectionInfo (the two
 * are the same on the wire), answered from the FileDescriptorSet the build
 * embeds in each binary, so grpcurl and buf curl need no .proto files.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "descset.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "server_internal.h"

#define MAX_FILES 64

struct svc_reflection {
    svc_server_t *server;
    svc_descset_t *set; /* NULL when the binary embeds no descriptors */
};

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_request_t;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_response_t;

static void
reflection__error(refl_response_t *resp, svc_arena_t *arena, svc_status_t code, const char *what,
                  const char *name)
{
    Grpc__Reflection__V1__ErrorResponse *e = svc_arena_alloc(arena, sizeof(*e));

    if (e == NULL) {
        return;
    }
    grpc__reflection__v1__error_response__init(e);
    e->error_code = (int32_t)code;
    e->error_message = svc_arena_printf(arena, "%s %.200s not found", what, name);
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = e;
}

/* Answers with file i and everything it imports. */
static void
reflection__files(struct svc_reflection *r, refl_response_t *resp, svc_arena_t *arena, int i)
{
    Grpc__Reflection__V1__FileDescriptorResponse *fd = svc_arena_alloc(arena, sizeof(*fd));
    int idx[MAX_FILES];
    int n = svc_descset_closure(r->set, i, idx, MAX_FILES);

    if (fd == NULL) {
        return;
    }
    grpc__reflection__v1__file_descriptor_response__init(fd);
    fd->file_descriptor_proto = svc_arena_alloc(arena, (size_t)n * sizeof(ProtobufCBinaryData));
    if (fd->file_descriptor_proto == NULL) {
        return;
    }
    for (int k = 0; k < n; k++) {
        const uint8_t *data;
        size_t len;
        svc_descset_bytes(r->set, idx[k], &data, &len);
        fd->file_descriptor_proto[k].data = (uint8_t *)data;
        fd->file_descriptor_proto[k].len = len;
    }
    fd->n_file_descriptor_proto = (size_t)n;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = fd;
}

static void
reflection__list(struct svc_reflection *r, refl_response_t *resp, svc_arena_t *arena)
{
    Grpc__Reflection__V1__ListServiceResponse *list = svc_arena_alloc(arena, sizeof(*list));
    int n = svc__server_service_count(r->server);

    if (list == NULL) {
        return;
    }
    grpc__reflection__v1__list_service_response__init(list);
    list->service = svc_arena_alloc(arena, (size_t)n * sizeof(*list->service));
    if (list->service == NULL && n > 0) {
        return;
    }
    for (int i = 0; i < n; i++) {
        Grpc__Reflection__V1__ServiceResponse *s = svc_arena_alloc(arena, sizeof(*s));
        if (s == NULL) {
            return;
        }
        grpc__reflection__v1__service_response__init(s);
        s->name = (char *)svc__server_service_name(r->server, i);
        list->service[list->n_service++] = s;
    }
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = list;
}

static void
reflection__info(svc_call_t *call, const ProtobufCMessage *msg, void *user)
{
    struct svc_reflection *r = user;
    const refl_request_t *req = (const void *)msg;
    refl_response_t resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    svc_arena_t *arena = svc_call_arena(call);
    int i;

    resp.valid_host = req->host;
    resp.original_request = (refl_request_t *)req;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        reflection__list(r, &resp, arena);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        i = r->set != NULL ? svc_descset_find_file(r->set, req->file_by_filename) : -1;
        if (i >= 0) {
            reflection__files(r, &resp, arena, i);
        } else {
            reflection__error(&resp, arena, SVC_NOT_FOUND, "file", req->file_by_filename);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        i = r->set != NULL ? svc_descset_find_symbol(r->set, req->file_containing_symbol) : -1;
        if (i >= 0) {
            reflection__files(r, &resp, arena, i);
        } else {
            reflection__error(&resp, arena, SVC_NOT_FOUND, "symbol", req->file_containing_symbol);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        i = r->set != NULL ? svc_descset_find_symbol(r->set, req->all_extension_numbers_of_type)
                           : -1;
        if (i >= 0) { /* our protos declare no extensions: the list is empty */
            Grpc__Reflection__V1__ExtensionNumberResponse *ext =
                svc_arena_alloc(arena, sizeof(*ext));
            if (ext != NULL) {
                grpc__reflection__v1__extension_number_response__init(ext);
                ext->base_type_name = req->all_extension_numbers_of_type;
                resp.message_response_case =
                    GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
                resp.all_extension_numbers_response = ext;
            }
        } else {
            reflection__error(&resp, arena, SVC_NOT_FOUND, "type",
                              req->all_extension_numbers_of_type);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        reflection__error(&resp, arena, SVC_NOT_FOUND, "extension of",
                          req->file_containing_extension != NULL &&
                                  req->file_containing_extension->containing_type != NULL
                              ? req->file_containing_extension->containing_type
                              : "");
        break;
    default: {
        svc_err_t err;
        svc_err_set(&err, SVC_INVALID_ARGUMENT, "empty reflection request");
        svc_call_fail(call, &err);
        return;
    }
    }
    if (resp.message_response_case ==
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
        svc_err_t err;
        svc_err_set(&err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        svc_call_fail(call, &err);
        return;
    }
    (void)svc_call_write(call, &resp.base);
}

svc_reflection_t *
svc__reflection_register(svc_server_t *server, const unsigned char *set, size_t set_len,
                         svc_err_t *err)
{
    static const svc_handler_t handler = {"ServerReflectionInfo", SVC_METHOD_BIDI_STREAM,
                                          reflection__info, NULL, 0};
    const ProtobufCMessageDescriptor *in =
        &grpc__reflection__v1__server_reflection_request__descriptor;
    const ProtobufCMessageDescriptor *out =
        &grpc__reflection__v1__server_reflection_response__descriptor;
    struct svc_reflection *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    r->server = server;
    if (set != NULL && (r->set = svc_descset_parse(set, set_len, err)) == NULL) {
        free(r);
        return NULL;
    }
    if (svc_server_add_method(server, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              in, out, &handler, r, err) != 0 ||
        svc_server_add_method(server,
                              "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", in,
                              out, &handler, r, err) != 0) {
        svc__reflection_destroy(r);
        return NULL;
    }
    return r;
}

void
svc__reflection_destroy(svc_reflection_t *r)
{
    if (r == NULL) {
        return;
    }
    svc_descset_free(r->set);
    free(r);
}
