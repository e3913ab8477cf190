/*
 * tls.h: transport security for servers and outgoing channels (DESIGN.md §6).
 *
 * TLS_CERT_FILE + TLS_KEY_FILE make a server speak TLS only, and are the
 * certificate its outgoing calls present; TLS_CLIENT_CA_FILE makes the server
 * require a client certificate signed by that CA (mTLS); TLS_CA_FILE makes
 * every outgoing channel speak TLS and verify the server against that CA.
 * Without them, plaintext as before.
 */
#ifndef SVC_TLS_H
#define SVC_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "svc/err.h"

typedef struct {
    const char *cert_file;      /* PEM certificate (chain); with key_file */
    const char *key_file;       /* PEM private key of cert_file */
    const char *client_ca_file; /* PEM CA(s) client certificates must chain to */
    const char *ca_file;        /* PEM CA(s) that outgoing calls trust */
} svc_tls_opts_t;

/* The four settings, as svc_opt_t initializers; dest is a svc_tls_opts_t *. */
#define SVC_OPTS_TLS(o)                                                                            \
    {"tls-cert-file",                                                                              \
     "TLS_CERT_FILE",                                                                              \
     SVC_OPT_STRING,                                                                               \
     NULL,                                                                                         \
     "PEM certificate: serve TLS only (with TLS_KEY_FILE), and present it on outgoing calls",      \
     0,                                                                                            \
     0,                                                                                            \
     &(o)->cert_file,                                                                              \
     0},                                                                                           \
        {"tls-key-file",                                                                           \
         "TLS_KEY_FILE",                                                                           \
         SVC_OPT_STRING,                                                                           \
         NULL,                                                                                     \
         "PEM private key of TLS_CERT_FILE",                                                       \
         0,                                                                                        \
         0,                                                                                        \
         &(o)->key_file,                                                                           \
         0},                                                                                       \
        {"tls-client-ca-file",                                                                     \
         "TLS_CLIENT_CA_FILE",                                                                     \
         SVC_OPT_STRING,                                                                           \
         NULL,                                                                                     \
         "PEM CA: require client certificates signed by it (mTLS)",                                \
         0,                                                                                        \
         0,                                                                                        \
         &(o)->client_ca_file,                                                                     \
         0},                                                                                       \
    {                                                                                              \
        "tls-ca-file", "TLS_CA_FILE", SVC_OPT_STRING, NULL,                                        \
            "PEM CA: outgoing calls use TLS and trust servers signed by it", 0, 0, &(o)->ca_file,  \
            0                                                                                      \
    }

/* Reads the TLS_* variables of the environment into o (unset stay NULL). */
void svc_tls_opts_from_env(svc_tls_opts_t *o);

/*
 * Checks the settings as a whole: cert and key come together, the key is the
 * certificate's, every file reads as PEM, a client CA needs a certificate.
 * On error err names the setting and the file (for exit 2 at start).
 */
int svc_tls_check(const svc_tls_opts_t *o, svc_err_t *err);

/*
 * From now on, channels made by svc_channel_create (and so svc_client_get)
 * use o's client side: TLS verified with o->ca_file, presenting
 * o->cert_file when set; plaintext when o->ca_file is NULL. Channels already
 * made keep what they had (svc_client_release_all drops them). Checks o as
 * svc_tls_check does first. Thread-safe.
 */
int svc_tls_client_configure(const svc_tls_opts_t *o, svc_err_t *err);

/*
 * The usual main() step after the settings are parsed: checks o and
 * configures outgoing channels with it, or prints one line naming the
 * setting and exits 2.
 */
void svc_tls_configure_or_exit(const svc_tls_opts_t *o, const char *prog);

/* True when outgoing channels use TLS. */
bool svc_tls_client_enabled(void);

#endif
