/* A real panic inside an extern "C" function, caught at the boundary.
 *
 * run.sh builds this program twice:
 *  - against a libomk built with the omk-ffi feature `test-panic` (in
 *    target/ffi-panic, never the default build), where omk_call(h,
 *    "test.panic", ...) panics inside omk_call: the call must return
 *    OMK_RESULT_PANIC with the panic's message, leave the output alone, and
 *    the same handle must keep working afterwards (under valgrind: no
 *    errors, no definite leaks);
 *  - as test_panic_absent against the default target/debug/libomk.so, run
 *    with the argument "absent": there the op must not exist. */
#include "omk_test.h"

#include <pthread.h>

/* The message omk-ffi panics with (TEST_PANIC_MESSAGE in omk-ffi/src/lib.rs). */
#define PANIC_TEXT "deliberate test panic (omk-ffi feature test-panic)"

struct panic_thread {
    omk_t *h;
    omk_result rc;
    char *out;
    char message[1024];
};

/* Panic on another thread: its message stays on that thread. */
static void *panic_on_a_thread(void *arg) {
    struct panic_thread *t = arg;
    t->rc = omk_call(t->h, "test.panic", NULL, &t->out);
    snprintf(t->message, sizeof t->message, "%s", omk_last_error_message());
    return NULL;
}

/* The handle still answers: version (checked against the header's
 * expectation) and team.list. */
static void check_handle_works(omk_t *h) {
    char *out = NULL;
    CHECK_OK(omk_call(h, "version", NULL, &out));
    CHECK_HAS(out, "\"version\": \"" OMK_EXPECTED_VERSION "\"");
    CHECK(strcmp(omk_last_error_message(), "") == 0);
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_team_list(h, &out));
    CHECK_HAS(out, "\"teams\": []");
    omk_string_free(out);
}

int main(int argc, char **argv) {
    int absent = argc > 1 && strcmp(argv[1], "absent") == 0;
    char *dir = t_mkdtemp("panic");
    char state[4096], project[4096];
    char *out = NULL;
    omk_t *h;
    int i;

    /* Keep the panic hook's report short (and fast under valgrind); the
     * guard does not depend on it. Read by std at the first panic. */
    setenv("RUST_BACKTRACE", "0", 1);

    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    CHECK(mkdir(project, 0700) == 0);
    h = t_open(state, project);

    if (absent) {
        /* The default build has no test op: it is an unknown op. */
        CHECK_RC(omk_call(h, "test.panic", NULL, &out), OMK_RESULT_NOT_FOUND);
        CHECK(out == NULL);
        CHECK_HAS(omk_last_error_message(), "test.panic");
        check_handle_works(h);
        omk_close(h);
        t_rm_rf(dir);
        free(dir);
        return t_finish();
    }

    /* The panic becomes a result code and a message; nothing is written. */
    CHECK_RC(omk_call(h, "test.panic", NULL, &out), OMK_RESULT_PANIC);
    CHECK(out == NULL);
    CHECK_HAS(omk_last_error_message(), PANIC_TEXT);
    CHECK_HAS(omk_last_error_message(), "omk_call: panic inside omk");
    /* The message stays readable after cleanup calls that return nothing. */
    omk_string_free(NULL);
    CHECK_HAS(omk_last_error_message(), PANIC_TEXT);

    /* The same handle works afterwards, and a success clears the message. */
    check_handle_works(h);

    /* Again, with params: a panic is not a one-off that poisons anything. */
    for (i = 0; i < 3; i++) {
        out = NULL;
        CHECK_RC(omk_call(h, "test.panic", "{\"n\": 1}", &out), OMK_RESULT_PANIC);
        CHECK(out == NULL);
        CHECK_HAS(omk_last_error_message(), PANIC_TEXT);
        check_handle_works(h);
    }

    /* A panic on another thread is reported there, not here. */
    {
        pthread_t thread;
        struct panic_thread t;
        t.h = h;
        t.rc = OMK_RESULT_OK;
        t.out = NULL;
        t.message[0] = '\0';
        CHECK(pthread_create(&thread, NULL, panic_on_a_thread, &t) == 0);
        CHECK(pthread_join(thread, NULL) == 0);
        CHECK(t.rc == OMK_RESULT_PANIC);
        CHECK(t.out == NULL);
        CHECK_HAS(t.message, PANIC_TEXT);
        CHECK(strcmp(omk_last_error_message(), "") == 0);
    }

    /* Argument checks still come first: a NULL out pointer is invalid input. */
    CHECK_RC(omk_call(h, "test.panic", NULL, NULL), OMK_RESULT_INVALID_INPUT);
    CHECK_HAS(omk_last_error_message(), "out_json");

    check_handle_works(h);
    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
