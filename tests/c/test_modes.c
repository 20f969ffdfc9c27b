/* Autopilot and Ralph from C on the scripted agent ($OMK_KIMI_BIN): a ralph
 * that passes on its second iteration (the gate's output, fed back, tells
 * the agent what to write), an autopilot to Complete, list/status, and the
 * errors of bad options, a bad id, a missing run and stopping a finished
 * one. */
#include "omk_test.h"

/* Fails until DONE exists, printing the directive that writes it. */
static const char *GATES_TOML =
    "[[gate]]\n"
    "name = \"done\"\n"
    "command = \"sh -c 'test -f DONE || { echo \\\"missing: [write:DONE:ok]\\\"; exit 1; }'\"\n";

int main(void) {
    const char *agent = getenv("OMK_KIMI_BIN");
    char *dir = t_mkdtemp("modes");
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

    CHECK_OK(omk_ralph_run(h, "Make the gate pass",
                           "{\"max_iterations\": 4, \"name\": \"r1\"}", &out));
    CHECK_HAS(out, "\"status\": \"complete\"");
    CHECK_HAS(out, "\"iteration\": 2");
    CHECK_HAS(out, "\"max_iterations\": 4");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_ralph_list(h, &out));
    CHECK_HAS(out, "\"ralphs\"");
    CHECK_HAS(out, "\"state_dir\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_ralph_status(h, "r1", &out));
    CHECK_HAS(out, "\"id\": \"r1\"");
    omk_string_free(out);
    out = NULL;

    /* DONE exists now: the autopilot's gates pass on the final tree. */
    CHECK_OK(omk_autopilot_run(h, "Tidy up [json-plan:Look around]",
                               "{\"name\": \"a1\", \"max_agents\": 1}", &out));
    CHECK_HAS(out, "\"status\": \"complete\"");
    CHECK_HAS(out, "\"phase\": \"Complete\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_autopilot_list(h, &out));
    CHECK_HAS(out, "\"autopilots\"");
    CHECK_HAS(out, "\"plans_dir\"");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_autopilot_status(h, "a1", &out));
    CHECK_HAS(out, "\"phase\": \"Complete\"");
    omk_string_free(out);
    out = NULL;

    /* Errors: outputs untouched, a message set. */
    out = &sentinel;
    CHECK_RC(omk_ralph_run(h, "x", "{\"max_iterations\": 0}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_ralph_run(h, "x", "{\"task\": \"y\"}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_ralph_run(h, "x", "{\"name\": \"r1\"}", &out), OMK_RESULT_CONFLICT);
    CHECK_RC(omk_ralph_status(h, "../etc", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_ralph_status(h, NULL, &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_autopilot_status(h, "nope", &out), OMK_RESULT_NOT_FOUND);
    CHECK_HAS(omk_last_error_message(), "nope");
    CHECK_RC(omk_autopilot_stop(h, "a1", &out), OMK_RESULT_CONFLICT);
    CHECK_RC(omk_autopilot_run(h, "x", "{\"max_agents\": 99}", &out), OMK_RESULT_INVALID_INPUT);
    CHECK_RC(omk_autopilot_run(NULL, "x", NULL, &out), OMK_RESULT_INVALID_INPUT);
    CHECK(out == &sentinel);

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
