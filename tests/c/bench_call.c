/* Per-call cost of the C ABI: omk_metrics + omk_string_free, timed over
 * CALLS calls (default 200000) split into BATCHES batches (default 21) after
 * a warm-up, in a fresh state dir under /tmp. Prints the median per-call
 * time of the batches as `c_metrics_ns <n>` (read by the bench script).
 *
 *   cargo build --release -p omk-ffi
 *   gcc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -pthread -Iinclude \
 *       tests/c/bench_call.c -Ltarget/release -lomk -Wl,-rpath,target/release \
 *       -o target/bench_call && target/bench_call [CALLS [BATCHES]]
 */
#include "omk_test.h"

#include <time.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One call; exits on failure so a broken build never reports a time. */
static void one_call(omk_t *h) {
    char *out = NULL;
    if (omk_metrics(h, &out) != OMK_RESULT_OK) {
        fprintf(stderr, "omk_metrics: %s\n", omk_last_error_message());
        exit(1);
    }
    omk_string_free(out);
}

/* The boundary alone: the `version` op touches no file. */
static void version_call(omk_t *h) {
    char *out = NULL;
    if (omk_call(h, "version", NULL, &out) != OMK_RESULT_OK) {
        fprintf(stderr, "omk_call version: %s\n", omk_last_error_message());
        exit(1);
    }
    omk_string_free(out);
}

/* Median per-call time of `batches` batches of `per_batch` calls. */
static double median_ns(omk_t *h, void (*call)(omk_t *), long batches, long per_batch, double *ns) {
    long i, b;
    for (i = 0; i < per_batch && i < 10000; i++) call(h); /* warm-up */
    for (b = 0; b < batches; b++) {
        double start = now_ns();
        for (i = 0; i < per_batch; i++) call(h);
        ns[b] = (now_ns() - start) / (double)per_batch;
    }
    qsort(ns, (size_t)batches, sizeof *ns, cmp_double);
    return ns[batches / 2];
}

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 200000;
    long batches = argc > 2 ? atol(argv[2]) : 21;
    long per_batch;
    double *ns;
    char dir[] = "/tmp/omk-bench-XXXXXX";
    char state[64];
    omk_t *h;

    if (calls < 1 || batches < 1 || batches > calls) {
        fprintf(stderr, "usage: %s [CALLS [BATCHES]]\n", argv[0]);
        return 2;
    }
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(state, sizeof state, "%s/state", dir);
    h = t_open(state, dir);
    per_batch = calls / batches;
    ns = malloc((size_t)batches * sizeof *ns);

    printf("c_metrics_ns %.0f\n", median_ns(h, one_call, batches, per_batch, ns));
    fprintf(stderr, "omk %s: %ld batches of %ld omk_metrics calls, min %.0f ns, max %.0f ns\n",
            omk_version(), batches, per_batch, ns[0], ns[batches - 1]);
    printf("c_version_ns %.0f\n", median_ns(h, version_call, batches, per_batch, ns));

    free(ns);
    omk_close(h);
    t_rm_rf(dir);
    return 0;
}
