/* Tiny helpers shared by the C tests (tests/c/run.sh builds and runs them).
 * Include it first: it selects the POSIX API the tests use. Every test
 * counts its checks and ends with the line "N passed, M failed". */
#ifndef OMK_TEST_H
#define OMK_TEST_H

#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* mkdtemp, setenv, nftw, clock_gettime */
#endif

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omk.h"

static int t_passed = 0;
static int t_failed = 0;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (cond) {                                                        \
            t_passed++;                                                    \
        } else {                                                           \
            t_failed++;                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,         \
                    __LINE__, #cond);                                      \
        }                                                                  \
    } while (0)

/* Check a result code; on mismatch also print omk's message. */
#define CHECK_RC(expr, expected)                                           \
    do {                                                                   \
        omk_result t_rc_ = (expr);                                         \
        if (t_rc_ == (expected)) {                                         \
            t_passed++;                                                    \
        } else {                                                           \
            t_failed++;                                                    \
            fprintf(stderr, "%s:%d: %s returned %d, expected %d (%s): %s\n", \
                    __FILE__, __LINE__, #expr, (int)t_rc_,                 \
                    (int)(expected), #expected, omk_last_error_message()); \
        }                                                                  \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, OMK_RESULT_OK)

/* Check that a (possibly NULL) string contains a substring. */
#define CHECK_HAS(text, needle)                                            \
    do {                                                                   \
        const char *t_text_ = (text);                                      \
        if (t_text_ != NULL && strstr(t_text_, (needle)) != NULL) {        \
            t_passed++;                                                    \
        } else {                                                           \
            t_failed++;                                                    \
            fprintf(stderr, "%s:%d: %s does not contain %s:\n%s\n",        \
                    __FILE__, __LINE__, #text, #needle,                    \
                    t_text_ ? t_text_ : "(null)");                         \
        }                                                                  \
    } while (0)

/* Print the summary line and return the exit status. */
static inline int t_finish(void) {
    printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed == 0 ? 0 : 1;
}

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the path. */
static inline char *t_mkdtemp(const char *tag) {
    const char *base = getenv("TMPDIR");
    char buf[4096];
    if (base == NULL || base[0] == '\0') base = "/tmp";
    snprintf(buf, sizeof buf, "%s/omk-c-%s-XXXXXX", base, tag);
    if (mkdtemp(buf) == NULL) {
        fprintf(stderr, "mkdtemp %s: %s\n", buf, strerror(errno));
        exit(2);
    }
    return strdup(buf);
}

static inline int t_rm_entry(const char *path, const struct stat *st, int flag,
                             struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf PATH (best effort). */
static inline void t_rm_rf(const char *path) {
    nftw(path, t_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Write CONTENT to PATH; 0 on success. */
static inline int t_write_file(const char *path, const char *content) {
    FILE *f = fopen(path, "w");
    if (f == NULL) return -1;
    fputs(content, f);
    return fclose(f);
}

/* The contents of PATH (malloc'd, NUL-terminated), or NULL. */
static inline char *t_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    if (f == NULL) return NULL;
    buf = malloc(65536);
    n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* omk_open on {"state_dir": STATE, "project_dir": PROJECT}; exits on failure. */
static inline omk_t *t_open(const char *state, const char *project) {
    char options[8192];
    omk_t *h = NULL;
    if (strpbrk(state, "\"\\") || strpbrk(project, "\"\\")) {
        fprintf(stderr, "temp paths must not need JSON escaping\n");
        exit(2);
    }
    snprintf(options, sizeof options,
             "{\"state_dir\": \"%s\", \"project_dir\": \"%s\"}", state, project);
    if (omk_open(options, &h) != OMK_RESULT_OK) {
        fprintf(stderr, "omk_open(%s): %s\n", options, omk_last_error_message());
        exit(2);
    }
    return h;
}

#endif /* OMK_TEST_H */
