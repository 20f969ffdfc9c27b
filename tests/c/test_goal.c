/* A goal from C on the scripted agent ($OMK_KIMI_BIN): run to ready, then
 * list, show, proof, replay, budget, diagnose, recover, rollback, and the
 * errors of a bad id, a missing goal and bad options. */
#include "omk_test.h"

static const char *GATES_TOML =
    "[[gate]]\n"
    "name = \"hello\"\n"
    "command = \"grep -q hi hello.txt\"\n";

int main(void) {
    const char *agent = getenv("OMK_KIMI_BIN");
    char *dir = t_mkdtemp("goal");
    char state[4096], project[4096], omkdir[8192], gates[8192];
    char *out = NULL;
    char sentinel;
    omk_t *h;

    CHECK(agent != NULL && access(agent, X_OK) == 0);
    if (agent == NULL) {
        return t_finish();
    }
    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    snprintf(omkdir, sizeof omkdir, "%s/project/.omk", dir);
    snprintf(gates, sizeof gates, "%s/project/.omk/gates.toml", dir);
    CHECK(mkdir(project, 0700) == 0);
    CHECK(mkdir(omkdir, 0700) == 0);
    CHECK(t_write_file(gates, GATES_TOML) == 0);
    h = t_open(state, project);

    CHECK_OK(omk_goal_run(h, "Greet [json-plan:Write it [write:hello.txt:hi\\]]",
                          "{\"budget_tokens\": 100000, \"max_agents\": 2}", &out));
    CHECK_HAS(out, "\"status\": \"ready\"");
    CHECK_HAS(out, "\"budget_tokens\": 100000");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_list(h, &out));
    CHECK_HAS(out, "\"goals\"");
    CHECK_HAS(out, "\"status\": \"ready\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_show(h, NULL, &out));
    CHECK_HAS(out, "\"normalized_goal\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_proof(h, "latest", &out));
    CHECK_HAS(out, "\"known_gaps\": []");
    CHECK_HAS(out, "\"post_mutation_gates_ran\": true");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_replay(h, NULL, &out));
    CHECK_HAS(out, "\"duplicate_events\": 0");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_budget(h, NULL, &out));
    CHECK_HAS(out, "\"budget_tokens\": 100000");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_diagnose(h, NULL, &out));
    CHECK_HAS(out, "\"stagnant\": false");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_recover(h, NULL, &out));
    CHECK_HAS(out, "\"checkpoint_id\": 2");
    CHECK_HAS(out, "\"strategy\": \"continue\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_goal_rollback(h, NULL, 1, false, &out));
    CHECK_HAS(out, "\"checkpoint_id\": 1");
    omk_string_free(out);
    out = NULL;

    /* Errors: outputs untouched, a message set. */
    out = &sentinel;
    CHECK_RC(omk_goal_show(h, "../etc", &out), OMK_RESULT_INVALID_INPUT);
    CHECK(out == &sentinel);
    CHECK_RC(omk_goal_show(h, "goal-missing", &out), OMK_RESULT_NOT_FOUND);
    CHECK_HAS(omk_last_error_message(), "goal-missing");
    CHECK_RC(omk_goal_run(h, "x", "{\"outcome\": \"y\"}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_goal_run(h, "x", "{\"budget_tokens\": 0}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_goal_budget_add(h, NULL, "{}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_goal_rollback(h, NULL, 99, false, &out), OMK_RESULT_NOT_FOUND);
    CHECK_RC(omk_goal_run(NULL, "x", NULL, &out), OMK_RESULT_INVALID_INPUT);
    CHECK(out == &sentinel);

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
