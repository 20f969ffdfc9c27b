/* The example program of docs/c-abi.md: list the teams, or show one. */
#include <stdio.h>
#include <omk.h>

int main(int argc, char **argv) {
    omk_t *omk = NULL;
    char *doc = NULL;
    if (omk_open(NULL, &omk) != OMK_RESULT_OK) { /* NULL: default state dir, cwd project */
        fprintf(stderr, "omk: %s\n", omk_last_error_message());
        return 1;
    }
    omk_result rc = argc > 1 ? omk_team_status(omk, argv[1], &doc) : omk_team_list(omk, &doc);
    if (rc == OMK_RESULT_OK) {
        printf("%s\n", doc); /* JSON, as `omk team ... --json` prints it */
        omk_string_free(doc);
    } else {
        fprintf(stderr, "omk: error %d: %s\n", (int)rc, omk_last_error_message());
    }
    omk_close(omk);
    return rc == OMK_RESULT_OK ? 0 : 1;
}
