/* C ABI smoke test: the header compiles cleanly and the library reports its
 * version. Built with -Wall -Wextra -Werror and run under valgrind. */
#include <stdio.h>
#include <string.h>

#include "omk.h"

static int failures = 0;

#define CHECK(cond)                                                   \
    do {                                                              \
        if (!(cond)) {                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,    \
                    __LINE__, #cond);                                 \
            failures++;                                               \
        }                                                             \
    } while (0)

int main(void) {
    const char *v = omk_version();
    CHECK(v != NULL);
    CHECK(strlen(v) > 0);
    CHECK(strcmp(v, OMK_EXPECTED_VERSION) == 0);
    CHECK(omk_abi_version() == OMK_ABI_VERSION);
    CHECK(OMK_RESULT_OK == 0);
    printf("omk %s, ABI %u\n", v, omk_abi_version());
    if (failures == 0) {
        printf("1 passed, 0 failed\n");
        return 0;
    }
    printf("0 passed, 1 failed\n");
    return 1;
}
