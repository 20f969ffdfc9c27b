/* Errors at the C boundary: NULL and non-UTF-8 arguments, bad JSON, unknown
 * ops and teams. Every failure returns its code, leaves the out pointer
 * untouched and explains itself in omk_last_error_message(). */
#include "omk_test.h"

#include <pthread.h>

/* A value no successful call would write: outputs start as this. */
static char sentinel_storage;
#define SENTINEL (&sentinel_storage)

/* The call failed with CODE, left OUT alone, and the message mentions NEEDLE. */
#define CHECK_FAILS(expr, code, out, needle)                               \
    do {                                                                   \
        CHECK_RC(expr, code);                                              \
        CHECK((void *)(out) == (void *)SENTINEL);                          \
        CHECK(strlen(omk_last_error_message()) > 0);                       \
        CHECK_HAS(omk_last_error_message(), needle);                       \
    } while (0)

struct thread_result {
    omk_t *h;
    omk_result rc;
    char message[512];
    char before[512];
};

/* Fail on another thread: its message must not leak into the caller's. */
static void *fail_on_a_thread(void *arg) {
    struct thread_result *r = arg;
    char *out = SENTINEL;
    snprintf(r->before, sizeof r->before, "%s", omk_last_error_message());
    r->rc = omk_call(r->h, "no.such.op", NULL, &out);
    snprintf(r->message, sizeof r->message, "%s", omk_last_error_message());
    return NULL;
}

int main(void) {
    char *dir = t_mkdtemp("errors");
    char state[4096];
    char options[8192];
    char *out = SENTINEL;
    omk_t *h = (omk_t *)SENTINEL;
    omk_t *handle;

    snprintf(state, sizeof state, "%s/state", dir);

    /* Before any failure the message is empty, never NULL. */
    CHECK(omk_last_error_message() != NULL);
    CHECK(strcmp(omk_last_error_message(), "") == 0);

    /* omk_open */
    CHECK_FAILS(omk_open("{", &h), OMK_RESULT_INVALID_INPUT, h, "options_json");
    CHECK_HAS(omk_last_error_message(), "JSON");
    CHECK_FAILS(omk_open("{\"state_dir\": 1}", &h), OMK_RESULT_INVALID_INPUT, h,
                "options_json");
    CHECK_FAILS(omk_open("{\"nope\": true}", &h), OMK_RESULT_INVALID_INPUT, h, "nope");
    CHECK_FAILS(omk_open("[]", &h), OMK_RESULT_INVALID_INPUT, h, "object");
    CHECK_FAILS(omk_open("{\"state_dir\": \"\xff\"}", &h), OMK_RESULT_INVALID_INPUT, h,
                "UTF-8");
    CHECK_RC(omk_open(NULL, NULL), OMK_RESULT_INVALID_INPUT);
    CHECK_HAS(omk_last_error_message(), "`out`");

    snprintf(options, sizeof options, "{\"state_dir\": \"%s\", \"project_dir\": \"%s\"}",
             state, dir);
    handle = NULL;
    CHECK_OK(omk_open(options, &handle));
    CHECK(handle != NULL);
    CHECK(strcmp(omk_last_error_message(), "") == 0);
    if (handle == NULL) return t_finish();

    /* NULL handle, op, out */
    CHECK_FAILS(omk_call(NULL, "metrics", NULL, &out), OMK_RESULT_INVALID_INPUT, out, "`h`");
    CHECK_FAILS(omk_metrics(NULL, &out), OMK_RESULT_INVALID_INPUT, out, "`h`");
    CHECK_FAILS(omk_team_list(NULL, &out), OMK_RESULT_INVALID_INPUT, out, "omk_team_list");
    CHECK_FAILS(omk_call(handle, NULL, NULL, &out), OMK_RESULT_INVALID_INPUT, out, "`op`");
    CHECK_RC(omk_call(handle, "metrics", NULL, NULL), OMK_RESULT_INVALID_INPUT);
    CHECK_HAS(omk_last_error_message(), "`out_json`");
    CHECK_RC(omk_doctor(handle, NULL), OMK_RESULT_INVALID_INPUT);
    CHECK_HAS(omk_last_error_message(), "`out_json`");
    CHECK_FAILS(omk_team_status(handle, NULL, &out), OMK_RESULT_INVALID_INPUT, out, "`name`");
    CHECK_FAILS(omk_team_shutdown(handle, NULL, false, &out), OMK_RESULT_INVALID_INPUT, out,
                "`name`");
    CHECK_FAILS(omk_team_run(handle, NULL, "task", NULL, &out), OMK_RESULT_INVALID_INPUT, out,
                "`spec`");
    CHECK_FAILS(omk_team_run(handle, "1:executor", NULL, NULL, &out),
                OMK_RESULT_INVALID_INPUT, out, "`task`");

    /* Invalid UTF-8 */
    CHECK_FAILS(omk_call(handle, "\xff\xfe", NULL, &out), OMK_RESULT_INVALID_INPUT, out,
                "UTF-8");
    CHECK_HAS(omk_last_error_message(), "`op`");
    CHECK_FAILS(omk_call(handle, "team.status", "{\"name\": \"\xc3\x28\"}", &out),
                OMK_RESULT_INVALID_INPUT, out, "UTF-8");
    CHECK_HAS(omk_last_error_message(), "`params_json`");
    CHECK_FAILS(omk_team_status(handle, "caf\xe9", &out), OMK_RESULT_INVALID_INPUT, out,
                "UTF-8");

    /* Invalid JSON and params that do not fit the op */
    CHECK_FAILS(omk_call(handle, "metrics", "{", &out), OMK_RESULT_INVALID_INPUT, out, "JSON");
    CHECK_FAILS(omk_call(handle, "team.status", "{\"name\": ", &out),
                OMK_RESULT_INVALID_INPUT, out, "not valid JSON");
    CHECK_FAILS(omk_call(handle, "metrics", "{\"x\": 1}", &out), OMK_RESULT_INVALID_INPUT,
                out, "no parameters");
    CHECK_FAILS(omk_call(handle, "team.status", "{}", &out), OMK_RESULT_INVALID_INPUT, out,
                "name");
    CHECK_FAILS(omk_gates_run(handle, "{\"gates\": 3}", &out), OMK_RESULT_INVALID_INPUT, out,
                "gates");
    CHECK_FAILS(omk_gates_run(handle, "[\"a\"]", &out), OMK_RESULT_INVALID_INPUT, out,
                "object");
    CHECK_FAILS(omk_team_run(handle, "1:executor", "t", "{\"bogus\": 1}", &out),
                OMK_RESULT_INVALID_INPUT, out, "bogus");
    CHECK_FAILS(omk_team_run(handle, "1:executor", "t", "{\"task\": \"x\"}", &out),
                OMK_RESULT_INVALID_INPUT, out, "\"task\"");
    CHECK_FAILS(omk_team_run(handle, "1:executor", "t", "{", &out), OMK_RESULT_INVALID_INPUT,
                out, "options_json");

    /* Unknown op, bad spec, unknown team */
    CHECK_FAILS(omk_call(handle, "no.such.op", NULL, &out), OMK_RESULT_NOT_FOUND, out,
                "no.such.op");
    CHECK_HAS(omk_last_error_message(), "team.run"); /* lists the known ops */
    CHECK_FAILS(omk_team_run(handle, "0:executor", "do it", NULL, &out),
                OMK_RESULT_INVALID_INPUT, out, "0");
    CHECK_FAILS(omk_call(handle, "team.run", "{\"spec\": \"0:executor\", \"task\": \"x\"}", &out),
                OMK_RESULT_INVALID_INPUT, out, "0");
    CHECK_FAILS(omk_team_status(handle, "no-such-team", &out), OMK_RESULT_NOT_FOUND, out,
                "no-such-team");
    CHECK_FAILS(omk_team_shutdown(handle, "no-such-team", true, &out), OMK_RESULT_NOT_FOUND,
                out, "no-such-team");

    /* The message is per thread: another thread's failure does not touch it,
     * and a fresh thread starts with "". */
    {
        pthread_t t;
        struct thread_result r;
        char mine[512];
        memset(&r, 0, sizeof r);
        r.h = handle;
        snprintf(mine, sizeof mine, "%s", omk_last_error_message());
        CHECK(pthread_create(&t, NULL, fail_on_a_thread, &r) == 0);
        CHECK(pthread_join(t, NULL) == 0);
        CHECK(r.rc == OMK_RESULT_NOT_FOUND);
        CHECK(strcmp(r.before, "") == 0);
        CHECK_HAS(r.message, "no.such.op");
        CHECK(strcmp(omk_last_error_message(), mine) == 0);
    }

    /* Freeing and closing leave the message alone; success clears it. */
    omk_string_free(NULL);
    CHECK_HAS(omk_last_error_message(), "no-such-team");
    out = NULL;
    CHECK_OK(omk_call(handle, "version", "null", &out));
    CHECK(strcmp(omk_last_error_message(), "") == 0);
    CHECK_HAS(out, omk_version());
    omk_string_free(out);

    /* NULLs are no-ops */
    omk_string_free(NULL);
    omk_close(NULL);
    omk_close(handle);

    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
