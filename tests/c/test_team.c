/* A team run from C on the scripted agent ($OMK_KIMI_BIN, set by run.sh),
 * then status, list, shutdown and metrics, and one handle shared by four
 * threads. */
#include "omk_test.h"

#include <pthread.h>

#define THREADS 4
#define CALLS_PER_THREAD 50

struct worker {
    omk_t *h;
    int ok;     /* calls that returned OK with the expected document */
    int failed; /* anything else */
};

static void *call_metrics(void *arg) {
    struct worker *w = arg;
    int i;
    for (i = 0; i < CALLS_PER_THREAD; i++) {
        char *out = NULL;
        omk_result rc = omk_metrics(w->h, &out);
        if (rc == OMK_RESULT_OK && out != NULL &&
            strstr(out, "\"total_team_runs\": 1") != NULL &&
            omk_last_error_message()[0] == '\0') {
            w->ok++;
        } else {
            w->failed++;
            fprintf(stderr, "thread call %d: rc=%d %s\n", i, (int)rc,
                    omk_last_error_message());
        }
        omk_string_free(out);
    }
    return NULL;
}

int main(void) {
    const char *agent = getenv("OMK_KIMI_BIN");
    char *dir = t_mkdtemp("team");
    char state[4096], project[4096], path[8192];
    char *out = NULL;
    char *via_call = NULL;
    char *content;
    omk_t *h;

    CHECK(agent != NULL && access(agent, X_OK) == 0);
    if (agent == NULL) {
        fprintf(stderr, "set OMK_KIMI_BIN to target/debug/omk-scripted-agent\n");
        return t_finish();
    }
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    CHECK(mkdir(project, 0700) == 0);
    h = t_open(state, project);

    /* Run: two workers, one writes a file through an approved tool call. */
    CHECK_OK(omk_team_run(h, "2:executor", "c test",
                          "{\"subtasks\": [\"[write:c.txt:from C]\", \"b\"], \"name\": \"cteam\"}",
                          &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    CHECK_HAS(out, "\"name\": \"cteam\"");
    CHECK_HAS(out, "\"worker_count\": 2");
    CHECK_HAS(out, "\"status\": \"completed\"");
    omk_string_free(out);
    out = NULL;

    snprintf(path, sizeof path, "%s/c.txt", project);
    content = t_read_file(path);
    CHECK(content != NULL);
    CHECK_HAS(content, "from C");
    free(content);

    /* A second run with the same name is a conflict, and writes nothing. */
    out = NULL;
    CHECK_RC(omk_team_run(h, "1:executor", "again", "{\"name\": \"cteam\", \"subtasks\": [\"x\"]}",
                          &out),
             OMK_RESULT_CONFLICT);
    CHECK(out == NULL);
    CHECK_HAS(omk_last_error_message(), "cteam");

    /* Status: the typed entry point and omk_call give the same document. */
    CHECK_OK(omk_team_status(h, "cteam", &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    CHECK_OK(omk_call(h, "team.status", "{\"name\": \"cteam\"}", &via_call));
    CHECK(out != NULL && via_call != NULL && strcmp(out, via_call) == 0);
    omk_string_free(out);
    omk_string_free(via_call);
    out = NULL;

    CHECK_OK(omk_team_list(h, &out));
    CHECK_HAS(out, "\"teams\"");
    CHECK_HAS(out, "\"name\": \"cteam\"");
    CHECK_HAS(out, "\"errors\": []");
    omk_string_free(out);
    out = NULL;

    /* Shutdown of a finished team is idempotent and returns its document. */
    CHECK_OK(omk_team_shutdown(h, "cteam", false, &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_team_shutdown(h, "cteam", false, &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_team_shutdown(h, "cteam", true, &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_metrics(h, &out));
    CHECK_HAS(out, "\"total_team_runs\": 1");
    omk_string_free(out);
    out = NULL;

    /* One handle, four threads at once. */
    {
        pthread_t threads[THREADS];
        struct worker workers[THREADS];
        int i, ok = 0, failed = 0;
        for (i = 0; i < THREADS; i++) {
            workers[i].h = h;
            workers[i].ok = 0;
            workers[i].failed = 0;
            CHECK(pthread_create(&threads[i], NULL, call_metrics, &workers[i]) == 0);
        }
        for (i = 0; i < THREADS; i++) {
            CHECK(pthread_join(threads[i], NULL) == 0);
            ok += workers[i].ok;
            failed += workers[i].failed;
        }
        CHECK(ok == THREADS * CALLS_PER_THREAD);
        CHECK(failed == 0);
    }

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
