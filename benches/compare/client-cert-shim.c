/*
 * LD_PRELOAD shim: makes wrk and h2load (OpenSSL clients without a client-certificate
 * option) present a client certificate. Every SSL_CTX the program creates gets the chain
 * and key named by SHIM_CERT and SHIM_KEY (PEM files).
 *
 *   gcc -shared -fPIC -O2 -o client-cert-shim.so client-cert-shim.c -ldl
 *   SHIM_CERT=client.pem SHIM_KEY=client.key LD_PRELOAD=./client-cert-shim.so wrk ...
 *
 * No OpenSSL headers needed: the few functions are looked up at run time.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;

#define SSL_FILETYPE_PEM 1

SSL_CTX *SSL_CTX_new(const SSL_METHOD *method) {
    static SSL_CTX *(*real_new)(const SSL_METHOD *);
    static int (*use_chain)(SSL_CTX *, const char *);
    static int (*use_key)(SSL_CTX *, const char *, int);
    if (!real_new) {
        real_new = (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(RTLD_NEXT, "SSL_CTX_new");
        use_chain = (int (*)(SSL_CTX *, const char *))dlsym(RTLD_DEFAULT,
                                                             "SSL_CTX_use_certificate_chain_file");
        use_key = (int (*)(SSL_CTX *, const char *, int))dlsym(RTLD_DEFAULT,
                                                                "SSL_CTX_use_PrivateKey_file");
    }
    SSL_CTX *ctx = real_new(method);
    const char *cert = getenv("SHIM_CERT");
    const char *key = getenv("SHIM_KEY");
    if (ctx && cert && key) {
        if (use_chain(ctx, cert) != 1 || use_key(ctx, key, SSL_FILETYPE_PEM) != 1) {
            fprintf(stderr, "client-cert-shim: cannot load %s / %s\n", cert, key);
            exit(2);
        }
    }
    return ctx;
}
