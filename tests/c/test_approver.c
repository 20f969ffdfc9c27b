/* The host approval policy from C: a callback set with omk_set_approver
 * decides the agents' file edits, from omk's threads. */
#include "omk_test.h"

#include <pthread.h>

struct tally {
    pthread_mutex_t lock;
    int asked;
    int saw_action;
};

static bool approve_yes_files(void *user_data, const char *request_json) {
    struct tally *t = user_data;
    bool yes = strstr(request_json, "yes.txt") != NULL;
    pthread_mutex_lock(&t->lock);
    t->asked++;
    if (strstr(request_json, "\"action\":\"edit file\"") != NULL) {
        t->saw_action++;
    }
    pthread_mutex_unlock(&t->lock);
    return yes;
}

int main(void) {
    const char *agent = getenv("OMK_KIMI_BIN");
    char *dir = t_mkdtemp("approver");
    char state[4096], project[4096], path[8192];
    struct tally t = {PTHREAD_MUTEX_INITIALIZER, 0, 0};
    const char *opts = "{\"subtasks\": [\"[write:yes.txt:ok]\", \"[write:no.txt:bad]\"], "
                       "\"approval\": \"host\", \"name\": \"hosted\"}";
    char *out = NULL;
    omk_t *h;

    CHECK(agent != NULL);
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    CHECK(mkdir(project, 0700) == 0);
    h = t_open(state, project);

    /* The host policy without a callback is refused, and nothing is written. */
    CHECK_RC(omk_team_run(h, "2:executor", "host", opts, &out), OMK_RESULT_INVALID_INPUT);
    CHECK(out == NULL);
    CHECK_HAS(omk_last_error_message(), "approver");
    CHECK_RC(omk_set_approver(NULL, approve_yes_files, &t), OMK_RESULT_INVALID_INPUT);

    CHECK_OK(omk_set_approver(h, approve_yes_files, &t));
    CHECK_OK(omk_team_run(h, "2:executor", "host", opts, &out));
    CHECK_HAS(out, "\"phase\": \"Completed\"");
    omk_string_free(out);
    out = NULL;
    CHECK(t.asked == 2);
    CHECK(t.saw_action == 2);
    snprintf(path, sizeof path, "%s/yes.txt", project);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/no.txt", project);
    CHECK(access(path, F_OK) != 0);

    /* Cleared: the host policy is refused again. */
    CHECK_OK(omk_set_approver(h, NULL, NULL));
    CHECK_RC(omk_team_run(h, "1:executor", "again", "{\"subtasks\": [\"x\"], \"approval\": \"host\"}", &out),
             OMK_RESULT_INVALID_INPUT);

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
