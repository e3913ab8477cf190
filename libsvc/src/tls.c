/*
 * tls.c: the TLS settings, checked once with OpenSSL at start so a wrong
 * file stops the service with one clear line instead of failing every
 * handshake later, and turned into gRPC core's SSL credentials. The PEM text
 * is kept in memory; each channel and server makes its credentials from it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "server_internal.h"
#include "svc/tls.h"

/* PEM files are small; a bigger one is a wrong path (a log, a disk image). */
#define PEM_MAX_BYTES (1024 * 1024)

/* The client side, shared by every channel made from now on. */
static pthread_mutex_t client_mu = PTHREAD_MUTEX_INITIALIZER;
static char *client_ca_pem;   /* NULL: plaintext */
static char *client_cert_pem; /* with client_key_pem, or both NULL */
static char *client_key_pem;

void
svc_tls_opts_from_env(svc_tls_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->cert_file = getenv("TLS_CERT_FILE");
    o->key_file = getenv("TLS_KEY_FILE");
    o->client_ca_file = getenv("TLS_CLIENT_CA_FILE");
    o->ca_file = getenv("TLS_CA_FILE");
}

static bool
tls__set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* The whole file as a NUL-terminated string; NULL with err set. */
static char *
tls__read_file(const char *setting, const char *path, svc_err_t *err)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "%s %s: %s", setting, path, strerror(errno));
        return NULL;
    }
    buf = malloc(PEM_MAX_BYTES + 1);
    if (buf == NULL) {
        fclose(f);
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    n = fread(buf, 1, PEM_MAX_BYTES + 1, f);
    if (ferror(f) || n > PEM_MAX_BYTES) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "%s %s: %s", setting, path,
                    ferror(f) ? "cannot read it" : "larger than 1 MiB, not a PEM file");
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* OpenSSL's reason for the last failure, for the error line. */
static const char *
tls__ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    return r != NULL ? r : "not PEM";
}

/* Certificates in pem (a chain or a CA bundle): at least one. */
static int
tls__check_certs(const char *setting, const char *path, const char *pem, svc_err_t *err)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int n = 0;

    if (bio == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        return -1;
    }
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_free(x);
        n++;
    }
    BIO_free(bio);
    ERR_clear_error(); /* the read that ended the loop */
    if (n == 0) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "%s %s: no PEM certificate in it", setting, path);
        return -1;
    }
    return 0;
}

/* The key parses and belongs to the first certificate of cert_pem. */
static int
tls__check_pair(const svc_tls_opts_t *o, const char *cert_pem, const char *key_pem, svc_err_t *err)
{
    BIO *cb = BIO_new_mem_buf(cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    X509 *cert = cb != NULL ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
    EVP_PKEY *key = NULL;
    int rc = -1;

    if (cb == NULL || kb == NULL) {
        svc_err_set(err, SVC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if (cert == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "TLS_CERT_FILE %s: no PEM certificate in it (%s)",
                    o->cert_file, tls__ssl_reason());
        goto out;
    }
    /* No passphrase callback: an encrypted key fails here, not at a prompt. */
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)"");
    if (key == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "TLS_KEY_FILE %s: no unencrypted PEM private key in it (%s)", o->key_file,
                    tls__ssl_reason());
        goto out;
    }
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "TLS_KEY_FILE %s is not the key of the certificate in TLS_CERT_FILE %s",
                    o->key_file, o->cert_file);
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    BIO_free(cb);
    BIO_free(kb);
    return rc;
}

/*
 * Reads and checks o's files; *cert, *key, *client_ca and *ca get the PEM
 * text of those that are set (NULL otherwise; the caller frees).
 */
static int
tls__load(const svc_tls_opts_t *o, char **cert, char **key, char **client_ca, char **ca,
          svc_err_t *err)
{
    *cert = *key = *client_ca = *ca = NULL;
    if (tls__set(o->cert_file) != tls__set(o->key_file)) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "%s is set without %s",
                    tls__set(o->cert_file) ? "TLS_CERT_FILE" : "TLS_KEY_FILE",
                    tls__set(o->cert_file) ? "TLS_KEY_FILE" : "TLS_CERT_FILE");
        return -1;
    }
    if (tls__set(o->client_ca_file) && !tls__set(o->cert_file)) {
        svc_err_set(err, SVC_INVALID_ARGUMENT,
                    "TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE (a server without "
                    "TLS cannot ask for client certificates)");
        return -1;
    }
    if (tls__set(o->cert_file)) {
        if ((*cert = tls__read_file("TLS_CERT_FILE", o->cert_file, err)) == NULL ||
            (*key = tls__read_file("TLS_KEY_FILE", o->key_file, err)) == NULL ||
            tls__check_pair(o, *cert, *key, err) != 0) {
            goto fail;
        }
    }
    if (tls__set(o->client_ca_file) &&
        ((*client_ca = tls__read_file("TLS_CLIENT_CA_FILE", o->client_ca_file, err)) == NULL ||
         tls__check_certs("TLS_CLIENT_CA_FILE", o->client_ca_file, *client_ca, err) != 0)) {
        goto fail;
    }
    if (tls__set(o->ca_file) && ((*ca = tls__read_file("TLS_CA_FILE", o->ca_file, err)) == NULL ||
                                 tls__check_certs("TLS_CA_FILE", o->ca_file, *ca, err) != 0)) {
        goto fail;
    }
    return 0;
fail:
    free(*cert);
    free(*key);
    free(*client_ca);
    free(*ca);
    *cert = *key = *client_ca = *ca = NULL;
    return -1;
}

/* Overwrites a private key's text before it is freed. */
static void
tls__free_secret(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

int
svc_tls_check(const svc_tls_opts_t *o, svc_err_t *err)
{
    char *cert, *key, *client_ca, *ca;

    if (tls__load(o, &cert, &key, &client_ca, &ca, err) != 0) {
        return -1;
    }
    free(cert);
    tls__free_secret(key);
    free(client_ca);
    free(ca);
    return 0;
}

int
svc_tls_client_configure(const svc_tls_opts_t *o, svc_err_t *err)
{
    char *cert, *key, *client_ca, *ca;

    if (tls__load(o, &cert, &key, &client_ca, &ca, err) != 0) {
        return -1;
    }
    free(client_ca); /* the server side's */
    if (ca == NULL) {
        free(cert); /* plaintext: nothing to present */
        tls__free_secret(key);
        cert = key = NULL;
    }
    pthread_mutex_lock(&client_mu);
    free(client_ca_pem);
    free(client_cert_pem);
    tls__free_secret(client_key_pem);
    client_ca_pem = ca;
    client_cert_pem = cert;
    client_key_pem = key;
    pthread_mutex_unlock(&client_mu);
    return 0;
}

void
svc_tls_configure_or_exit(const svc_tls_opts_t *o, const char *prog)
{
    svc_err_t err;

    if (svc_tls_client_configure(o, &err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit(2);
    }
}

bool
svc_tls_client_enabled(void)
{
    bool on;

    pthread_mutex_lock(&client_mu);
    on = client_ca_pem != NULL;
    pthread_mutex_unlock(&client_mu);
    return on;
}

grpc_channel_credentials *
svc__tls_channel_credentials(void)
{
    grpc_channel_credentials *creds;

    pthread_mutex_lock(&client_mu);
    if (client_ca_pem == NULL) {
        creds = grpc_insecure_credentials_create();
    } else {
        grpc_ssl_pem_key_cert_pair pair = {client_key_pem, client_cert_pem};
        creds = grpc_ssl_credentials_create_ex(client_ca_pem,
                                               client_cert_pem != NULL ? &pair : NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&client_mu);
    return creds;
}

grpc_server_credentials *
svc__tls_server_credentials(const svc_tls_opts_t *o, svc_err_t *err)
{
    char *cert, *key, *client_ca, *ca;
    grpc_server_credentials *creds;

    if (o == NULL || !tls__set(o->cert_file)) {
        if (o != NULL && tls__load(o, &cert, &key, &client_ca, &ca, err) != 0) {
            return NULL; /* a key without a certificate, say */
        }
        if (o != NULL) {
            free(ca);
        }
        return grpc_insecure_server_credentials_create();
    }
    if (tls__load(o, &cert, &key, &client_ca, &ca, err) != 0) {
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    /* gRPC copies the PEM text: ours can go at once. */
    creds = grpc_ssl_server_credentials_create_ex(
        client_ca, &pair, 1,
        client_ca != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    free(cert);
    tls__free_secret(key);
    free(client_ca);
    free(ca);
    if (creds == NULL) {
        svc_err_set(err, SVC_INVALID_ARGUMENT, "TLS_CERT_FILE %s: gRPC refused the credentials",
                    o->cert_file);
    }
    return creds;
}
