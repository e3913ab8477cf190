/*
 * testjwt.c: JWTs signed in the test with OpenSSL, good ones and every kind
 * of bad one (see testjwt.h).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "testjwt.h"

EVP_PKEY *
testjwt_rsa_key(int bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

EVP_PKEY *
testjwt_ec_key(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}

int
testjwt_write_public(EVP_PKEY *key, const char *path)
{
    BIO *bio = BIO_new_file(path, "w");
    int ok = bio != NULL && PEM_write_bio_PUBKEY(bio, key) == 1;

    BIO_free(bio);
    return ok ? 0 : -1;
}

char *
testjwt_public_pem(EVP_PKEY *key, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    long n;

    if (bio != NULL && PEM_write_bio_PUBKEY(bio, key) == 1 &&
        (n = BIO_get_mem_data(bio, &data)) > 0 && (out = malloc((size_t)n + 1)) != NULL) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        *len = (size_t)n;
    }
    BIO_free(bio);
    return out;
}

/* Appends the unpadded base64url of in[0..n) to out at *pos. */
static void
b64url(const unsigned char *in, size_t n, char *out, size_t *pos)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[(*pos)++] = abc[v >> 18];
        out[(*pos)++] = abc[(v >> 12) & 63];
        out[(*pos)++] = abc[(v >> 6) & 63];
        out[(*pos)++] = abc[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[(*pos)++] = abc[v >> 18];
        out[(*pos)++] = abc[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[(*pos)++] = abc[v >> 18];
        out[(*pos)++] = abc[(v >> 12) & 63];
        out[(*pos)++] = abc[(v >> 6) & 63];
    }
    out[*pos] = '\0';
}

/* Signs data with key (SHA-256); ES256 turns the DER signature into r||s. */
static int
sign_asym(const char *alg, EVP_PKEY *key, const char *data, size_t n, unsigned char *sig,
          size_t *sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[1024];
    size_t der_len = sizeof(der);
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(md, der, &der_len, (const unsigned char *)data, n) == 1;

    EVP_MD_CTX_free(md);
    if (!ok) {
        return -1;
    }
    if (strcmp(alg, "ES256") == 0) {
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);

        if (es == NULL) {
            return -1;
        }
        ok = BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 &&
             BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32;
        ECDSA_SIG_free(es);
        *sig_len = 64;
        return ok ? 0 : -1;
    }
    memcpy(sig, der, der_len);
    *sig_len = der_len;
    return 0;
}

char *
testjwt_sign(const char *alg, EVP_PKEY *key, const void *secret, size_t secret_len,
             const char *header_json, const char *payload_json)
{
    size_t hn = strlen(header_json), pn = strlen(payload_json), pos = 0, sig_len = 0;
    char *out = malloc((hn + pn) * 4 / 3 + 2048);
    unsigned char sig[1024];
    unsigned int hmac_len = 0;

    if (out == NULL) {
        return NULL;
    }
    b64url((const unsigned char *)header_json, hn, out, &pos);
    out[pos++] = '.';
    b64url((const unsigned char *)payload_json, pn, out, &pos);
    if (strcmp(alg, "HS256") == 0) {
        if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)out, pos, sig,
                 &hmac_len) == NULL) {
            free(out);
            return NULL;
        }
        sig_len = hmac_len;
    } else if (strcmp(alg, "none") != 0 && sign_asym(alg, key, out, pos, sig, &sig_len) != 0) {
        free(out);
        return NULL;
    }
    out[pos++] = '.';
    b64url(sig, sig_len, out, &pos);
    return out;
}

char *
testjwt_token(const char *alg, EVP_PKEY *key, const char *sub, int64_t now_s, int64_t exp_in_s,
              int64_t nbf_in_s, const char *iss, const char *aud)
{
    char header[64], payload[1024], nbf[48] = "", iss_part[256] = "", aud_part[256] = "";

    snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
    if (nbf_in_s != INT64_MIN) {
        snprintf(nbf, sizeof(nbf), ",\"nbf\":%" PRId64, now_s + nbf_in_s);
    }
    if (iss != NULL) {
        snprintf(iss_part, sizeof(iss_part), ",\"iss\":\"%s\"", iss);
    }
    if (aud != NULL) {
        snprintf(aud_part, sizeof(aud_part), ",\"aud\":\"%s\"", aud);
    }
    snprintf(payload, sizeof(payload),
             "{\"sub\":\"%s\",\"iat\":%" PRId64 ",\"exp\":%" PRId64 "%s%s%s}", sub, now_s,
             now_s + exp_in_s, nbf, iss_part, aud_part);
    return testjwt_sign(alg, key, NULL, 0, header, payload);
}

char *
testjwt_bearer(char *token)
{
    char *out = NULL;

    if (token != NULL && asprintf(&out, "Bearer %s", token) < 0) {
        out = NULL;
    }
    free(token);
    return out;
}
