/* Gates, pools, health and doctor from C, in a temp project with one passing
 * and one failing gate. */
#include "omk_test.h"

static const char *GATES_TOML =
    "[[gate]]\n"
    "name = \"ok\"\n"
    "command = \"true\"\n"
    "\n"
    "[[gate]]\n"
    "name = \"bad\"\n"
    "command = \"echo failing >&2; exit 1\"\n";

int main(void) {
    char *dir = t_mkdtemp("gates");
    char state[4096], project[4096], omkdir[8192], gates[8192];
    char *out = NULL;
    char sentinel;
    omk_t *h;

    snprintf(state, sizeof state, "%s/state", dir);
    snprintf(project, sizeof project, "%s/project", dir);
    snprintf(omkdir, sizeof omkdir, "%s/project/.omk", dir);
    snprintf(gates, sizeof gates, "%s/project/.omk/gates.toml", dir);
    CHECK(mkdir(project, 0700) == 0);
    CHECK(mkdir(omkdir, 0700) == 0);
    CHECK(t_write_file(gates, GATES_TOML) == 0);
    h = t_open(state, project);

    CHECK_OK(omk_gates_list(h, &out));
    CHECK_HAS(out, "\"ok\"");
    CHECK_HAS(out, "\"bad\"");
    CHECK_HAS(out, ".omk/gates.toml");
    omk_string_free(out);
    out = NULL;

    /* A failing gate is a result, not an error. */
    CHECK_OK(omk_gates_run(h, NULL, &out));
    CHECK_HAS(out, "\"passed\": false");
    CHECK_HAS(out, "failing");
    CHECK_HAS(out, "\"exit_code\": 1");
    omk_string_free(out);
    out = NULL;

    /* Only the passing gate. */
    CHECK_OK(omk_gates_run(h, "{\"gates\": [\"ok\"]}", &out));
    CHECK_HAS(out, "\"passed\": true");
    CHECK(out != NULL && strstr(out, "\"passed\": false") == NULL);
    CHECK(out != NULL && strstr(out, "\"bad\"") == NULL);
    omk_string_free(out);
    out = NULL;

    out = &sentinel;
    CHECK_RC(omk_gates_run(h, "{\"gates\": [\"zzz\"]}", &out), OMK_RESULT_NOT_FOUND);
    CHECK(out == &sentinel);
    CHECK_HAS(omk_last_error_message(), "zzz");
    out = NULL;

    CHECK_OK(omk_gates_status(h, false, &out));
    CHECK_HAS(out, "\"breakers\"");
    CHECK_HAS(out, "\"gate_name\": \"bad\"");
    CHECK_HAS(out, "\"failure_count\": 1");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_gates_status(h, true, &out));
    CHECK_HAS(out, "\"breakers\"");
    omk_string_free(out);
    out = NULL;

    out = &sentinel;
    CHECK_RC(omk_gates_reset(h, "nope", false, &out), OMK_RESULT_NOT_FOUND);
    CHECK(out == &sentinel);
    CHECK_HAS(omk_last_error_message(), "nope");
    out = NULL;

    CHECK_OK(omk_gates_reset(h, "bad", false, &out));
    CHECK_HAS(out, "\"count\"");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_gates_reset(h, NULL, false, &out));
    CHECK_HAS(out, "\"reset\"");
    CHECK_HAS(out, "\"count\"");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_gates_reset(h, NULL, true, &out));
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_pools_status(h, &out));
    CHECK_HAS(out, "\"pools\"");
    CHECK_HAS(out, "\"name\": \"default\"");
    omk_string_free(out);
    out = NULL;
    CHECK_OK(omk_pools_cleanup(h, &out));
    CHECK_HAS(out, "\"removed\": 0");
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_health(h, &out));
    CHECK_HAS(out, "\"status\"");
    CHECK_HAS(out, omk_version());
    omk_string_free(out);
    out = NULL;

    CHECK_OK(omk_doctor(h, &out));
    CHECK_HAS(out, "\"checks\"");
    CHECK_HAS(out, "\"healthy\"");
    omk_string_free(out);
    out = NULL;

    /* The same documents through omk_call. */
    CHECK_OK(omk_call(h, "gates.list", NULL, &out));
    CHECK_HAS(out, "\"bad\"");
    omk_string_free(out);
    out = NULL;

    omk_close(h);
    t_rm_rf(dir);
    free(dir);
    return t_finish();
}
